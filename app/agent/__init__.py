"""The edge agent (`edge-platform agent`): runs inside an edge cluster that the platform cannot
dial (NAT, firewalls), dials out to the platform over one WebSocket, and answers the platform's
Kubernetes API requests against its own cluster's API server (app.tunnel.protocol).

- settings: command line, environment, mounted Secret directory (in that order of precedence)
- kubeapi: the local API server as every Kubernetes client finds it (in-cluster or kubeconfig)
- exchange: one tunnelled request checked and forwarded, its answer streamed back
- store: where the agent keeps its credential (a Secret in a pod, a file elsewhere)
- platform: the join and rotation calls to the platform
- tunnel: the WebSocket as the protocol's transport
- run: the connection loop (join, rotate, connect, serve, back off, reconnect)

The agent needs none of the platform's own settings (database, Redis, signing keys).
"""
