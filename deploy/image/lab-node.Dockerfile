# The flatnet node image, ghcr.io/flatnet-io/flatnet-node, as the containerlab
# topologies in test/topologies expect it (docs/lab.md): flatnet-agent as the
# entrypoint, reading /etc/flatnet/flatnet.yaml (the topology binds it); the
# CNI plugin in /opt/cni/bin with the reference plugins its conflist chains;
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
# cnitool comes from the CNI module go.mod already pins.
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/flatnet-agent ./cmd/flatnet ./cmd/flatnetctl \
    github.com/containernetworking/cni/cnitool

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iproute2 iputils-ping procps iptables iperf3 containernetworking-plugins \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/flatnet-agent /out/flatnetctl /out/cnitool /usr/local/bin/
COPY --from=build /out/flatnet /opt/cni/bin/flatnet
COPY deploy/cni/10-flatnet.conflist /etc/cni/net.d/10-flatnet.conflist
# The flatnet plugin first, then Debian's portmap and bandwidth.
ENV CNI_PATH=/opt/cni/bin:/usr/lib/cni
ENTRYPOINT ["flatnet-agent", "--config", "/etc/flatnet/flatnet.yaml"]
