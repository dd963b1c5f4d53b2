"""One HTTP request, safely: request values and wire format, the transport seam, the aiohttp
transport, the egress policy and on-complete signing."""
