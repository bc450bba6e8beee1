# Build stage: cgo for libopus.
FROM golang:1.26-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libopus-dev libopusfile-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o /out/mediarelay ./cmd/mediarelay

# Runtime: libopus only.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libopus0 libopusfile0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd -r -u 10001 mediarelay && mkdir /data && chown mediarelay /data
COPY --from=build /out/mediarelay /usr/local/bin/mediarelay
USER mediarelay
WORKDIR /data
EXPOSE 8080/tcp 5060/udp 5060/tcp 40000/udp 40000/tcp 20000-39999/udp
# In a container the defaults' loopback bind would be unreachable.
ENV MEDIARELAY_HTTP_LISTEN=0.0.0.0:8080 MEDIARELAY_MEDIA_BIND_IP=0.0.0.0
# Docker's default seccomp profile refuses io_uring, which the media loops use
# to batch their system calls; allow io_uring_setup, io_uring_enter and
# io_uring_register in the profile to get it back (the relay works without,
# at about a third more CPU).
ENTRYPOINT ["mediarelay"]
CMD ["serve"]
