"""``.. tee-extra-specs::``: the tee: namespace, from Nova's validators.

Renders what ``nova_tee.api.extra_specs.register()`` gives Nova (the same
objects Nova's API checks flavors with): each key, its description, its
value type and allowed values.
"""

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList


def _value(validator):
    value = validator.value
    kind = value.get("type")
    if "enum" in value:
        return "one of " + ", ".join(f"``{v}``" for v in value["enum"])
    if kind is bool:
        return "boolean (``true``/``false``)"
    if kind is int:
        return f"integer, {value.get('min')} to {value.get('max')}"
    if "pattern" in value:
        return f"string matching ``{value['pattern']}``"
    return getattr(kind, "__name__", str(kind))


class TEEExtraSpecs(Directive):
    has_content = False

    def run(self):
        from nova_tee.api import extra_specs

        lines = [".. list-table::", "   :header-rows: 1",
                 "   :widths: 25 20 55", "",
                 "   * - Key", "     - Value", "     - Meaning"]
        for validator in extra_specs.register():
            lines += [f"   * - ``{validator.name}``",
                      f"     - {_value(validator)}",
                      f"     - {validator.description}"]
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source="tee-extra-specs"),
                                self.content_offset, node)
        return node.children


def setup(app):
    app.add_directive("tee-extra-specs", TEEExtraSpecs)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
