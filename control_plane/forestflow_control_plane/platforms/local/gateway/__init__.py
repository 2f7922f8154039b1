"""The local platform's gateway: ingress and activator in one ASGI app. It routes by host
or path, splits by the Route's percents, holds requests while a variant hydrates, and
keeps each variant's replica pool sized and healthy."""
