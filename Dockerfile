# certrot — multi-stage build. Build: docker build -t certrot .
# Run:  docker run -v $PWD/config:/etc/certrot -v certrot-state:/var/lib/certrot certrot
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
RUN apt-get update && apt-get install -y --no-install-recommends libmosquitto1 libsqlite3-0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/certrot certrot \
    && install -d -o certrot -g certrot /var/lib/certrot /etc/certrot
COPY --from=build /out/certrot /usr/local/bin/certrot
USER certrot
WORKDIR /var/lib/certrot
VOLUME ["/etc/certrot", "/var/lib/certrot"]
ENTRYPOINT ["/usr/local/bin/certrot"]
CMD ["serve", "--config", "/etc/certrot/certrot.yaml"]
