# Rendered by netstrap: the node listens on loopback behind netstrap's relays and
# advertises the stable addresses. Apply with: process !anylog_path/netstrap.al
# tcp: served by netstrap itself on port 32548 (no upstream configured)
# rest: served by netstrap itself on port 1 (no upstream configured)
set reply ip and port = 127.0.0.1:32548
