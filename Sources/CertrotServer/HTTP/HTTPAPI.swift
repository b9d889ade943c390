import CertrotCore
import CertrotHTTPAPI
import Foundation
import Logging

/// The HTTP API (docs/openapi.yaml, served under `/api/v1/`): each operation calls the JSON-RPC method it names,
/// through ``LocalRPC``, with the same parameters, and answers its result as the document's schema. The result is
/// the method's own typed result, encoded as on MQTT and decoded into the type generated from the document: one
/// that no longer matches is a 500 that says so (and fails the schemathesis run of `make test`).
struct HTTPAPI: APIProtocol {
    let rpc: LocalRPC
    let logger: Logger

    /// A failed call: the HTTP status and the Problem body.
    struct Failure: Error {
        var status: Int
        var body: Components.Responses._Error
    }

    /// Calls `method` with `params` as the presenter of the request's token (``APIToken/caller``) and decodes its
    /// result as `T`.
    func call<T: Decodable>(_ method: String, _ params: [String: Any] = [:]) async -> Result<T, Failure> {
        switch await rpc.call(method, params: params, token: APIToken.caller) {
        case .result(let data):
            do {
                return .success(try JSONDecoder().decode(T.self, from: data))
            } catch {
                logger.error(
                    "HTTP API: a result does not match docs/openapi.yaml",
                    metadata: ["method": "\(method)", "error": "\(error)"])
                return .failure(
                    Self.failure(code: RPCError.Code.internalError.rawValue, "result does not match the API document"))
            }
        case .error(let code, let message, let data):
            return .failure(Self.failure(code: code, message, data: data))
        case .unavailable(let message):
            return .failure(Self.failure(code: RPCError.Code.unavailable.rawValue, message))
        }
    }

    /// Calls `method` and answers `ok` with its result, or `failed` with the status and Problem.
    func answer<T: Decodable, Output>(
        _ method: String, _ params: [String: Any] = [:], ok: (T) -> Output,
        failed: (Int, Components.Responses._Error) -> Output
    ) async -> Output {
        switch await call(method, params) as Result<T, Failure> {
        case .success(let result): ok(result)
        case .failure(let failure): failed(failure.status, failure.body)
        }
    }

    static func failure(code: Int, _ message: String, data: Data? = nil) -> Failure {
        let bytes = HTTPProblem.json(code: code, message, data: data)
        let problem =
            (try? JSONDecoder().decode(Components.Schemas.Problem.self, from: Data(bytes)))
            ?? Components.Schemas.Problem(code: code, message: message)
        return Failure(status: HTTPProblem.status(code: code), body: .init(body: .json(problem)))
    }

    /// A request body as the method's `params` object.
    static func params<Body: Encodable>(_ body: Body?) -> [String: Any] {
        guard let body, let data = try? JSONEncoder().encode(body),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return [:] }
        return object
    }

    /// Query parameters as `params` members: the ones present.
    static func params(_ members: [String: Any?]) -> [String: Any] {
        members.compactMapValues { $0 }
    }

    func getFleetStatus(_ input: Operations.GetFleetStatus.Input) async throws -> Operations.GetFleetStatus.Output {
        return await answer(
            FleetStatus.name, ok: { (result: Components.Schemas.FleetStatus) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func getFleetRisk(_ input: Operations.GetFleetRisk.Input) async throws -> Operations.GetFleetRisk.Output {
        return await answer(
            FleetRisk.name, Self.params(["limit": input.query.limit]),
            ok: { (result: Components.Schemas.FleetRisk) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func listDevices(_ input: Operations.ListDevices.Input) async throws -> Operations.ListDevices.Output {
        let query = input.query
        let params = Self.params([
            "state": query.state?.rawValue, "campaign": query.campaign, "holding": query.holding,
            "expiringBefore": query.expiringBefore, "tag": query.tag, "after": query.after, "prefix": query.prefix,
            "limit": query.limit,
        ])
        return await answer(
            DeviceList.name, params, ok: { (result: Components.Schemas.DeviceList) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func getDeviceStatus(_ input: Operations.GetDeviceStatus.Input) async throws -> Operations.GetDeviceStatus.Output {
        return await answer(
            DeviceStatus.name, ["device": input.path.id],
            ok: { (result: Components.Schemas.DeviceStatus) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func retryDevice(_ input: Operations.RetryDevice.Input) async throws -> Operations.RetryDevice.Output {
        var params: [String: Any] = [:]
        if case .json(let body) = input.body { params = Self.params(body) }
        params["device"] = input.path.id
        return await answer(
            DeviceRetry.name, params,
            ok: { (result: Components.Schemas.DeviceRetryResult) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func listCampaigns(_ input: Operations.ListCampaigns.Input) async throws -> Operations.ListCampaigns.Output {
        let params = Self.params(["state": input.query.state?.rawValue])
        return await answer(
            CampaignList.name, params,
            ok: { (result: Components.Schemas.CampaignList) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func createCampaign(_ input: Operations.CreateCampaign.Input) async throws -> Operations.CreateCampaign.Output {
        guard case .json(let body) = input.body else {
            return .default(statusCode: 415, Self.failure(code: -32600, "JSON only").body)
        }
        return await answer(
            CampaignCreate.name, Self.params(body),
            ok: { (result: Components.Schemas.CampaignCreateResult) in .created(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func getCampaignStatus(
        _ input: Operations.GetCampaignStatus.Input
    ) async throws -> Operations.GetCampaignStatus.Output {
        return await answer(
            CampaignStatus.name, ["id": input.path.id],
            ok: { (result: Components.Schemas.CampaignStatus) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func pauseCampaign(_ input: Operations.PauseCampaign.Input) async throws -> Operations.PauseCampaign.Output {
        var params: [String: Any] = [:]
        if case .json(let body) = input.body { params = Self.params(body) }
        params["id"] = input.path.id
        return await answer(
            CampaignPause.name, params,
            ok: { (result: Components.Schemas.CampaignPauseResult) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func resumeCampaign(_ input: Operations.ResumeCampaign.Input) async throws -> Operations.ResumeCampaign.Output {
        return await answer(
            CampaignResume.name, ["id": input.path.id],
            ok: { (result: Components.Schemas.CampaignResumeResult) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func abortCampaign(_ input: Operations.AbortCampaign.Input) async throws -> Operations.AbortCampaign.Output {
        var params: [String: Any] = [:]
        if case .json(let body) = input.body { params = Self.params(body) }
        params["id"] = input.path.id
        return await answer(
            CampaignAbort.name, params,
            ok: { (result: Components.Schemas.CampaignAbortResult) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }

    func listAudit(_ input: Operations.ListAudit.Input) async throws -> Operations.ListAudit.Output {
        let query = input.query
        let params = Self.params([
            "after": query.after, "limit": query.limit, "since": query.since, "device": query.device,
        ])
        return await answer(
            AuditList.name, params, ok: { (result: Components.Schemas.AuditList) in .ok(.init(body: .json(result))) },
            failed: { .default(statusCode: $0, $1) })
    }
}
