# certrot — multi-stage build. Build: docker build -t certrot .
# Run:  docker run -v $PWD/config:/etc/certrot:ro -v certrot-state:/var/lib/certrot -p 9464:9464 certrot
# The signing key must be readable only by the container's user (uid 10001): chown 10001 and chmod 600 it.
FROM swift:6.3-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libmosquitto-dev libsqlite3-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product certrot --static-swift-stdlib \
    && install -D .build/release/certrot /out/certrot

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libmosquitto1 libsqlite3-0 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/certrot certrot \
    && install -d -o certrot -g certrot /var/lib/certrot /etc/certrot
COPY --from=build /out/certrot /usr/local/bin/certrot
USER certrot
WORKDIR /var/lib/certrot
# The HTTP listener serves /healthz; these defaults turn it on inside the container (the config may set them too).
ENV CERTROT_HTTP_HOST=0.0.0.0 CERTROT_HTTP_PORT=9464 CERTROT_STORE=sqlite:/var/lib/certrot/certrot.db
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
VOLUME ["/etc/certrot", "/var/lib/certrot"]
ENTRYPOINT ["/usr/local/bin/certrot"]
CMD ["serve", "--config", "/etc/certrot/certrot.yaml"]
