"""ffctl: the command line over the control-plane API (through `client`), plus the local
platform's lifecycle (`up`, `down`), which it drives through the local launcher. It never
touches Redis or the runtime directly.
"""
