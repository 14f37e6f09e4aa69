//! IP sources: static/debug lists, app DNS, system DNS, backup IPs.
