// The HTTP API's generated types (`Components`, `Operations`) and server protocol (`APIProtocol`), from
// docs/openapi.yaml by the OpenAPIGenerator build plugin. The handlers live in CertrotServer (HTTPAPI.swift):
// each calls the JSON-RPC method the operation names, as the MQTT requests do.
