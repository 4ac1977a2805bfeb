import Foundation
import HTTPTypes
import Hummingbird
import SettlementCore

/// An error the API returns: an HTTP status and the body `{"code": ..., "message": ...}`. The message is one line
/// (what, why, what to do) and never carries a secret.
public struct APIError: Error, Sendable, Hashable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String

    public init(_ status: HTTPResponse.Status, code: String, _ message: String) {
        self.status = status
        self.code = code
        // One line, always: a message built from input must not smuggle a second line into a log.
        self.message = message.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    public static func badRequest(_ message: String) -> APIError { APIError(.badRequest, code: "bad-request", message) }
    public static func unauthorized(_ message: String) -> APIError { APIError(.unauthorized, code: "unauthorized", message) }
    public static func forbidden(_ message: String) -> APIError { APIError(.forbidden, code: "forbidden", message) }
    public static func notFound(_ message: String) -> APIError { APIError(.notFound, code: "not-found", message) }
    public static func conflict(_ message: String) -> APIError { APIError(.conflict, code: "conflict", message) }
    public static func tooLarge(limit: Int) -> APIError {
        APIError(.contentTooLarge, code: "too-large",
                 "the request body is larger than \(limit) bytes: send at most \(SettlementLimits.maxRecordsPerBatch) records per batch")
    }

    /// The API's form of a store's error.
    init(_ error: SettlementError) {
        switch error.code {
        case .badRequest: self.init(.badRequest, code: error.code.rawValue, error.message)
        case .notFound: self.init(.notFound, code: error.code.rawValue, error.message)
        case .conflict: self.init(.conflict, code: error.code.rawValue, error.message)
        case .unauthorized: self.init(.unauthorized, code: error.code.rawValue, error.message)
        case .unavailable: self.init(.serviceUnavailable, code: error.code.rawValue, error.message)
        case .storage: self.init(.internalServerError, code: error.code.rawValue, error.message)
        }
    }

    /// The JSON response.
    func response() -> Response {
        struct Body: Encodable { var code: String; var message: String }
        return jsonResponse(Body(code: code, message: message), status: status)
    }
}

/// Limits every request is held to.
public enum SettlementLimits {
    /// Request bodies above this are refused with 413 before they are read whole.
    public static let maxBodyBytes = 2 * 1024 * 1024
    public static let maxRecordsPerBatch = 1000
    public static let maxPageSize = 1000
}

/// A JSON response (`Content-Type: application/json`).
func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    // Encoding our own wire values cannot fail (no floating point, no non-string keys).
    let data = (try? encoder.encode(value)) ?? Data(#"{"code":"internal","message":"response encoding failed"}"#.utf8)
    return jsonResponse(bytes: data, status: status)
}

/// A JSON answer already encoded.
func jsonResponse(bytes: some Sequence<UInt8>, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
             body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
}

/// The outermost middleware: every error leaves as a JSON error body (Hummingbird's own 404s and 413s included),
/// and every request is logged in one line at info (method, path without query, status, caller — never a header
/// value or a body).
struct ErrorMiddleware: RouterMiddleware {
    typealias Context = SettlementRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let response: Response
        do {
            response = try await next(request, context)
        } catch let error as APIError {
            response = error.response()
        } catch let error as SettlementError where error.code == .storage {
            // What failed names files, tables and the database's own words: the log's, not the caller's.
            context.logger.error("storage failed", metadata: ["http.path": "\(request.uri.path)", "error": "\(error.message)"])
            response = APIError(.internalServerError, code: error.code.rawValue,
                                "the settlement store failed (the cause is in settlementd's log): retry later; an upload may be sent again as it was").response()
        } catch let error as SettlementError {
            response = APIError(error).response()
        } catch let error as any HTTPResponseError {
            response = Self.fromHTTPError(error.status)
        } catch {
            context.logger.error("request failed", metadata: ["http.path": "\(request.uri.path)", "error": "\(error)"])
            response = APIError(.internalServerError, code: "internal", "the server failed to handle the request: see settlementd's log").response()
        }
        // The verified caller; for a refused request the key it claimed (parsed, so no header text reaches the log).
        let caller = context.loggedCaller.withLockedValue { $0 }.map { "\($0)" }
            ?? HTTPField.Name(RequestSigning.keyHeader).flatMap { request.headers[$0] }.flatMap(RequestSigning.Key.init(header:)).map { "\($0) (unverified)" }
            ?? "-"
        context.logger.info("request", metadata: [
            "http.method": "\(request.method)", "http.path": "\(request.uri.path)", "http.status": "\(response.status.code)",
            "caller": "\(caller)",
        ])
        return response
    }

    static func fromHTTPError(_ status: HTTPResponse.Status) -> Response {
        switch status {
        case .notFound:
            return APIError.notFound("no such endpoint: see docs/settlement-api.yaml").response()
        case .methodNotAllowed:
            return APIError(.methodNotAllowed, code: "method-not-allowed", "this endpoint does not take that method: see docs/settlement-api.yaml").response()
        case .contentTooLarge:
            return APIError.tooLarge(limit: SettlementLimits.maxBodyBytes).response()
        default:
            return APIError(status, code: status.code < 500 ? "bad-request" : "internal", "\(status.reasonPhrase)").response()
        }
    }
}

/// A path the API serves, asked with a method it does not serve: 405 with an `Allow` header, instead of the router's
/// 404 (which would say the endpoint does not exist).
struct MethodMiddleware: RouterMiddleware {
    typealias Context = SettlementRequestContext
    /// Each route's method and its path's segments (a capture, `{name}` as the router prints it or `:name`, matches
    /// any one segment).
    let routes: [(method: HTTPRequest.Method, segments: [Substring])]

    init(routes: [(HTTPRequest.Method, String)]) {
        self.routes = routes.map { ($0.0, $0.1.split(separator: "/")) }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        let written = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        // One spelling per endpoint: the router skips empty segments, so `//v1/admin/…` would reach a route that a
        // check on the path's text does not recognise.
        guard path.hasPrefix("/"), !written.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) || path == "/" else {
            return APIError(.notFound, code: "not-found",
                            "\(path) is not a path of the API (an empty, . or .. segment, or a trailing slash): see docs/settlement-api.yaml").response()
        }
        let segments = path.split(separator: "/")
        let matching = routes.filter { route in
            route.segments.count == segments.count
                && zip(route.segments, segments).allSatisfy { template, segment in
                    template.hasPrefix(":") || template.hasPrefix("{") || template == segment
                }
        }
        guard !matching.isEmpty, !matching.contains(where: { $0.method == request.method }) else {
            return try await next(request, context)
        }
        let allowed = Set(matching.map(\.method.rawValue)).sorted().joined(separator: ", ")
        var response = APIError(.methodNotAllowed, code: "method-not-allowed",
                                "\(request.uri.path) takes \(allowed), not \(request.method.rawValue): see docs/settlement-api.yaml").response()
        response.headers[.allow] = allowed
        return response
    }
}
