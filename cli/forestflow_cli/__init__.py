"""ffctl: the command line over the control-plane API (through `client`), plus the local
platform's lifecycle (`up`, `down`), which it drives through the local launcher, and
`predict`, which calls the gateway as any client would. It never touches Redis or a
runtime directly.
"""
