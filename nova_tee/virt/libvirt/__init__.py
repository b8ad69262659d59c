"""TEELibvirtDriver and what it needs (capabilities, launch XML)."""
