import AsyncHTTPClient
import CampusCard
import Foundation
import NIOCore
import NIOPosix
import SettlementCore

/// Why a call to the settlement service failed, and whether the request may have been carried out anyway.
public struct SettlementClientError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// No connection could be made: the request was not carried out.
        case unreachable
        /// The connection broke or timed out after the request was sent: it may have been carried out.
        case noAnswer = "no-answer"
        /// The service answered with an error (its code and message follow): not carried out.
        case refused
        /// The service's answer could not be read.
        case badAnswer = "bad-answer"
    }

    public var kind: Kind
    /// The HTTP status, when the service answered.
    public var status: Int?
    /// The service's error code (`SettlementError.Code` raw value), when it gave one.
    public var code: String?
    public var message: String

    public init(_ kind: Kind, status: Int? = nil, code: String? = nil, _ message: String) {
        self.kind = kind
        self.status = status
        self.code = code
        self.message = message
    }

    /// Whether the request may have taken effect (resend the same request: the service is idempotent).
    public var outcomeUnknown: Bool { kind == .noAnswer }

    public var description: String { message }
}

/// A client of the settlement service (docs/settlement-api.yaml): every request signed with the caller's key.
/// Sendable; one instance per key. `shutdown()` before the process exits.
public final class SettlementClient: Sendable {
    public let baseURL: String
    public let key: RequestSigning.Key
    private let secret: [UInt8]
    private let http: HTTPClient
    private let loop: MultiThreadedEventLoopGroup
    private let timeout: TimeAmount
    /// The largest answer read (a blacklist page or a batch's acknowledgements are far below it).
    private let maxAnswerBytes = 8 << 20

    /// `baseURL`: "https://settle.campus.example" or "http://127.0.0.1:8080" (no trailing path).
    public init(baseURL: String, key: RequestSigning.Key, secret: [UInt8], timeout: Duration = .seconds(30)) throws(SettlementClientError) {
        var base = baseURL
        while base.hasSuffix("/") { base.removeLast() }
        guard let url = URL(string: base), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
            throw SettlementClientError(.refused, "\"\(baseURL)\" is not an http(s) URL of the settlement service: give e.g. https://settle.campus.example")
        }
        guard !secret.isEmpty else { throw SettlementClientError(.refused, "the signing secret for \(key) is empty: give the secret the office issued for it") }
        self.baseURL = base
        self.key = key
        self.secret = secret
        let seconds = timeout.components.seconds
        self.timeout = .seconds(max(1, seconds))
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(min(10, max(1, seconds))), read: .seconds(max(1, seconds)))
        configuration.redirectConfiguration = .disallow
        // One event loop: the terminal sends one request at a time.
        loop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        http = HTTPClient(eventLoopGroup: loop, configuration: configuration)
    }

    /// Closes connections and stops the client's event loop thread.
    public func shutdown() async {
        try? await http.shutdown()
        try? await loop.shutdownGracefully()
    }

    // MARK: Terminal endpoints

    /// Uploads a batch; one acknowledgement per record, checked to answer exactly the records sent.
    public func upload(_ records: [TerminalRecord]) async throws(SettlementClientError) -> [RecordAck] {
        // Written by hand: the same bytes as `UploadRequest`'s encoding, a tenth of the CPU (WireJSON.swift).
        // The answer is read by AnswerReader, or by JSONDecoder when it is of another shape.
        let acks = try await call("POST", "/v1/transactions", json: TerminalRecord.uploadBody(records)) { data in
            try AnswerReader.acks(data) ?? SettlementJSON.decoder().decode(UploadAnswer.self, from: data).acks
        }
        let sent = records.map(\.terminalSequence)
        guard acks.map(\.terminalSequence) == sent else {
            throw SettlementClientError(.badAnswer, "the service acknowledged sequences \(acks.prefix(5).map(\.terminalSequence)) for a batch of \(sent.prefix(5)): nothing is marked; the batch is sent again")
        }
        return acks
    }

    public func blacklist(after version: Int64, limit: Int = 1000) async throws(SettlementClientError) -> BlacklistPage {
        try await call("GET", "/v1/blacklist?after=\(version)&limit=\(limit)", body: nil as Empty?)
    }

    public func parameters() async throws(SettlementClientError) -> TerminalParameters {
        try await call("GET", "/v1/parameters", body: nil as Empty?)
    }

    /// The service's clock.
    public func time() async throws(SettlementClientError) -> Date {
        let answer: TimeAnswer = try await call("GET", "/v1/time", body: nil as Empty?)
        // The answer is unsigned: a time no service has (before 2020, after 2100) is refused, not used in arithmetic.
        guard (1_577_836_800...4_102_444_800).contains(answer.unixTime) else {
            throw SettlementClientError(.badAnswer, "the service's time is \(answer.unixTime), not a time of this century: check the service's clock and that the uplink URL is the settlement service")
        }
        return Date(timeIntervalSince1970: TimeInterval(answer.unixTime))
    }

    // MARK: Online load (圈存)

    struct LoadPrepare: Codable {
        var reference: String
        var cardSerial: UInt32
        var amount: Fen
        var balanceBefore: Fen
        var counterBefore: UInt16
    }
    struct LoadConfirm: Codable {
        var balanceAfter: Fen
        var counterAfter: UInt16
    }

    /// Holds `amount` from the card's account before the card is written. Idempotent on `reference`.
    public func prepareLoad(reference: String, cardSerial: UInt32, amount: Fen, balanceBefore: Fen, counterBefore: UInt16) async throws(SettlementClientError) -> LoadState {
        try await call("POST", "/v1/loads", body: LoadPrepare(reference: reference, cardSerial: cardSerial, amount: amount,
                                                               balanceBefore: balanceBefore, counterBefore: counterBefore))
    }

    /// The card carries the load. Idempotent.
    public func confirmLoad(reference: String, balanceAfter: Fen, counterAfter: UInt16) async throws(SettlementClientError) -> LoadState {
        try await call("POST", "/v1/loads/\(reference)/confirm", body: LoadConfirm(balanceAfter: balanceAfter, counterAfter: counterAfter))
    }

    /// The card does not carry the load: release the hold. Idempotent.
    public func reverseLoad(reference: String) async throws(SettlementClientError) -> LoadState {
        try await call("POST", "/v1/loads/\(reference)/reverse", body: nil as Empty?)
    }

    // MARK: Plumbing

    struct Empty: Codable {}
    struct UploadRequest: Codable { var records: [TerminalRecord] }
    struct UploadAnswer: Codable { var acks: [RecordAck] }
    struct TimeAnswer: Codable { var unixTime: Int64 }
    struct ErrorAnswer: Codable { var code: String; var message: String }

    /// One signed request; decodes a 2xx answer as `Answer`, anything else into a typed error.
    public func call<Body: Encodable, Answer: Decodable>(_ method: String, _ pathAndQuery: String, body: Body?) async throws(SettlementClientError) -> Answer {
        let bytes: [UInt8]?
        do { bytes = try body.map { [UInt8](try SettlementJSON.encoder().encode($0)) } } catch {
            throw SettlementClientError(.refused, "cannot encode the request to \(pathAndQuery): \(error)")
        }
        return try await call(method, pathAndQuery, json: bytes)
    }

    /// One signed request with a JSON body already encoded (`nil`: none).
    func call<Answer: Decodable>(_ method: String, _ pathAndQuery: String, json: [UInt8]?) async throws(SettlementClientError) -> Answer {
        try await call(method, pathAndQuery, json: json) { data in try SettlementJSON.decoder().decode(Answer.self, from: data) }
    }

    /// One signed request with a JSON body already encoded (`nil`: none); `decode` reads a 2xx answer.
    func call<Answer>(_ method: String, _ pathAndQuery: String, json: [UInt8]?,
                      decode: (Data) throws -> Answer) async throws(SettlementClientError) -> Answer {
        let bytes = json ?? []
        var request = HTTPClientRequest(url: baseURL + pathAndQuery)
        request.method = .init(rawValue: method)
        for (name, value) in RequestSigning.headers(key: key, secret: secret, method: method, pathAndQuery: pathAndQuery, body: bytes) {
            request.headers.add(name: name, value: value)
        }
        if json != nil {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: bytes))
        }
        let response: HTTPClientResponse
        var answer: ByteBuffer
        do {
            response = try await http.execute(request, timeout: timeout)
            answer = try await response.body.collect(upTo: maxAnswerBytes)
        } catch {
            throw Self.transportError(error, method: method, path: pathAndQuery, base: baseURL)
        }
        let data = Data(answer.readBytes(length: answer.readableBytes) ?? [])
        guard (200..<300).contains(response.status.code) else {
            let reason = try? SettlementJSON.decoder().decode(ErrorAnswer.self, from: data)
            throw SettlementClientError(.refused, status: Int(response.status.code), code: reason?.code,
                                        "the settlement service refused \(method) \(pathAndQuery.split(separator: "?")[0]): \(response.status.code) \(reason?.message ?? response.status.reasonPhrase)")
        }
        do { return try decode(data) } catch {
            throw SettlementClientError(.badAnswer, status: Int(response.status.code), "the settlement service's answer to \(method) \(pathAndQuery.split(separator: "?")[0]) is not what docs/settlement-api.yaml says: \(error)")
        }
    }

    /// Classifies a transport failure: a connection never made is `unreachable`; anything after sending, `noAnswer`.
    static func transportError(_ error: any Error, method: String, path: String, base: String) -> SettlementClientError {
        // AHC reports a connection it never made as a connect timeout or NIO's connection error (refused, DNS).
        let text = "\(error)"
        let notConnected = (error as? HTTPClientError) == .connectTimeout
            || ["NIOConnectionError", "connectTimeout", "Connection refused", "connection refused", "dnsResolution"].contains { text.contains($0) }
        if notConnected {
            return SettlementClientError(.unreachable, "cannot reach the settlement service at \(base) (\(text)): check the network and uplink.url; records stay queued")
        }
        return SettlementClientError(.noAnswer, "no answer from the settlement service to \(method) \(path.split(separator: "?")[0]) (\(text)): it may have been carried out; the same request is sent again")
    }
}
