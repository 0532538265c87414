# The host as a container image: built from source in one stage, run as a
# non-root user from a slim image in the next. The compile cache lives in a
# volume, so a restarted container skips compiling unchanged guests.
#
#   docker build -t tcphost:0.1.0 .
#   docker run --rm -p 9800:9800 tcphost:0.1.0
#
# The default manifest (host/deploy/tenants.container.toml) runs the seed
# guest on 0.0.0.0:9800 with the admin endpoint on 0.0.0.0:9090; mount your
# own at /etc/tcphost/tenants.toml (Kubernetes: a ConfigMap, see
# host/deploy/kubernetes/).

FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# rust-toolchain.toml names the wasm32-wasip2 target; adding it up front
# keeps it in its own layer.
RUN rustup target add wasm32-wasip2
COPY . .
# The commit --version names (.git is not in the build context).
ARG TCPHOST_COMMIT=unknown
RUN TCPHOST_COMMIT="$TCPHOST_COMMIT" cargo build --release --locked -p host \
    && install -D -m 0755 target/release/tcphost /out/tcphost \
    && install -D -m 0755 target/release/tcp-client /out/tcp-client

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 tcphost \
    && useradd --system --uid 10001 --gid tcphost --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tcphost \
    && mkdir -p /etc/tcphost /var/cache/tcphost \
    && chown tcphost:tcphost /var/cache/tcphost
COPY --from=build /out/tcphost /out/tcp-client /usr/local/bin/
COPY host/deploy/tenants.container.toml /etc/tcphost/tenants.toml
USER 10001:10001
VOLUME ["/var/cache/tcphost"]
# 9800: the default manifest's tenant; 9090: the admin endpoint.
EXPOSE 9800 9090
ENTRYPOINT ["/usr/local/bin/tcphost"]
CMD ["--config", "/etc/tcphost/tenants.toml", "--cache-dir", "/var/cache/tcphost"]
