import CampusCard
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import SettlementCore

/// The request context: Hummingbird's core plus who signed the request and its body (read once, by the signing
/// middleware, under the size cap).
public struct SettlementRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The verified caller; `nil` only on unsigned endpoints (`GET /v1/time`).
    public var caller: RequestSigning.Key?
    /// The request body, collected under `SettlementLimits.maxBodyBytes`.
    public var body = ByteBuffer()
    /// Whether the signing terminal is a station (`TerminalInfo.loads`).
    public var isLoadStation = false
    /// The verified caller, for the request's log line: the outer middleware that writes it sees only its own copy
    /// of the context, so the signing middleware leaves the caller here too.
    let loggedCaller = NIOLockedValueBox<RequestSigning.Key?>(nil)

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
    }

    public var maxUploadSize: Int { SettlementLimits.maxBodyBytes }

    /// The signing terminal (terminal endpoints only: the signing middleware let nothing else through).
    var terminal: TerminalID {
        get throws {
            guard case let .terminal(id) = caller else { throw APIError.forbidden("this endpoint is for terminals: sign with a terminal key") }
            return TerminalID(id)
        }
    }
}
