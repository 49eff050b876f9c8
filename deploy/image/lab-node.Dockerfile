# The flatnet node image, ghcr.io/flatnet-io/flatnet-node, as the containerlab
# topologies in test/topologies expect it (docs/lab.md): flatnet-agent as the
# entrypoint, reading /etc/flatnet/flatnet.yaml (the topology binds it); the
# CNI plugin in /opt/cni/bin with the reference plugins its conflist chains
# (flatnet-portmap, flatnet-bandwidth);
# flatnetctl and cnitool to inspect the node and attach pods; iproute2, ping,
# sysctl, iptables and iperf3 for the topologies' exec lines and for poking.
#
# Build from the repository's top directory:
#
#   docker build -f deploy/image/lab-node.Dockerfile -t ghcr.io/flatnet-io/flatnet-node:latest .

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# cnitool comes from the CNI module go.mod already pins; the chained
# reference plugins, under the names the conflist gives them, from the
# plugins module go.mod lists as tools.
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/flatnet-agent ./cmd/flatnet ./cmd/flatnetctl \
    github.com/containernetworking/cni/cnitool \
 && CGO_ENABLED=0 go build -trimpath -o /out/flatnet-portmap github.com/containernetworking/plugins/plugins/meta/portmap \
 && CGO_ENABLED=0 go build -trimpath -o /out/flatnet-bandwidth github.com/containernetworking/plugins/plugins/meta/bandwidth

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iproute2 iputils-ping procps iptables iperf3 containernetworking-plugins \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/flatnet-agent /out/flatnetctl /out/cnitool /usr/local/bin/
COPY --from=build /out/flatnet /out/flatnet-portmap /out/flatnet-bandwidth /opt/cni/bin/
COPY deploy/cni/10-flatnet.conflist /etc/cni/net.d/10-flatnet.conflist
# flatnet's plugins first, then Debian's (loopback for cnitool's users).
ENV CNI_PATH=/opt/cni/bin:/usr/lib/cni
ENTRYPOINT ["flatnet-agent", "--config", "/etc/flatnet/flatnet.yaml"]
