import AsyncHTTPClient
import CampusCard
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SettlementCore
import SettlementServer

/// The admin key every test server knows.
let adminName = "office"
let adminSecret: [UInt8] = Array(repeating: 0xA5, count: 32)
/// The terminal every test server knows, with its secret.
let terminalID: TerminalID = 7
let terminalSecret: [UInt8] = Array(0..<32)

/// A response: status, body and the body as a JSON object (when it is one).
struct Reply {
    var status: Int
    var body: Data
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    var code: String? { json["code"] as? String }
    var message: String { json["message"] as? String ?? "" }
}

/// settlementd's application on 127.0.0.1, an ephemeral port, over `store`; a client that signs as asked.
struct TestServer {
    let port: Int
    let store: any SettlementStore

    var base: String { "http://127.0.0.1:\(port)" }

    /// Sends a request; `key` nil sends it unsigned. `now` is the signer's clock; `nonce` overrides the fresh one.
    func send(_ method: HTTPMethod, _ pathAndQuery: String, body: [UInt8] = [], key: RequestSigning.Key?,
              secret: [UInt8]? = nil, now: Date = Date(), nonce: String? = nil, tamper: Bool = false,
              extraHeaders: [(String, String)] = []) async throws -> Reply {
        var request = HTTPClientRequest(url: base + pathAndQuery)
        request.method = method
        if !body.isEmpty {
            request.body = .bytes(ByteBuffer(bytes: body))
            request.headers.add(name: "Content-Type", value: "application/json")
        }
        if let key {
            let secret = secret ?? {
                if case .admin = key { return adminSecret }
                return terminalSecret
            }()
            let timestamp = Int64(now.timeIntervalSince1970)
            let nonce = nonce ?? UUID().uuidString.replacingOccurrences(of: "-", with: "")
            var signature = RequestSigning.signature(secret: secret, method: method.rawValue, pathAndQuery: pathAndQuery,
                                                     timestamp: timestamp, nonce: nonce, body: body)
            if tamper { signature = String(signature.dropLast()) + (signature.last == "0" ? "1" : "0") }
            request.headers.add(name: RequestSigning.keyHeader, value: key.description)
            request.headers.add(name: RequestSigning.timestampHeader, value: "\(timestamp)")
            request.headers.add(name: RequestSigning.nonceHeader, value: nonce)
            request.headers.add(name: RequestSigning.signatureHeader, value: signature)
        }
        for (name, value) in extraHeaders { request.headers.add(name: name, value: value) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 16 * 1024 * 1024)
        return Reply(status: Int(response.status.code), body: Data(bytes.readableBytesView))
    }

    func send(_ method: HTTPMethod, _ pathAndQuery: String, json: Any, key: RequestSigning.Key?, secret: [UInt8]? = nil, now: Date = Date(),
              nonce: String? = nil) async throws -> Reply {
        let body = try JSONSerialization.data(withJSONObject: json)
        return try await send(method, pathAndQuery, body: Array(body), key: key, secret: secret, now: now, nonce: nonce)
    }

    func admin(_ method: HTTPMethod, _ path: String, json: Any? = nil) async throws -> Reply {
        if let json { return try await send(method, path, json: json, key: .admin(adminName)) }
        return try await send(method, path, key: .admin(adminName))
    }

    func terminal(_ method: HTTPMethod, _ path: String, json: Any? = nil) async throws -> Reply {
        if let json { return try await send(method, path, json: json, key: .terminal(terminalID.rawValue)) }
        return try await send(method, path, key: .terminal(terminalID.rawValue))
    }
}

/// Runs `body` against a fresh server on loopback (the store is made by `makeStore`), then stops the server.
func withServer<T: Sendable>(store: (any SettlementStore)? = nil, limits: ServerLimits = .init(), now: @escaping @Sendable () -> Date = { Date() },
                             _ body: @Sendable (TestServer) async throws -> T) async throws -> T {
    let backing: any SettlementStore
    if let store { backing = store } else { backing = try await makeTestStore() }
    try await backing.putTerminal(TerminalInfo(id: terminalID, merchant: "canteen-1", secret: terminalSecret, loads: true))
    var logger = Logger(label: "settlementd-test")
    logger.logLevel = .warning
    let (ports, continuation) = AsyncStream<Int>.makeStream()
    let app = SettlementServer(store: backing, admins: AdminCredentials([adminName: adminSecret]), limits: limits, now: now)
        .application(host: "127.0.0.1", port: 0, logger: logger, onServerRunning: { port in continuation.yield(port) })
    // Stopped the way settlementd stops on SIGTERM: a graceful shutdown of its service group.
    let services = ServiceGroup(configuration: .init(services: [app], logger: logger))
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await services.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw SettlementError(.unavailable, "the test server did not start") }
        do {
            let result = try await body(TestServer(port: port, store: backing))
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
            return result
        } catch {
            await services.triggerGracefulShutdown()
            try? await group.waitForAll()
            throw error
        }
    }
}

/// A record from the test terminal (a done purse debit unless changed).
func record(sequence: UInt32, amount: Int = 250, uid: String = "A1B2C3D4", counter: Int = 10, outcome: String = "done") -> [String: Any] {
    var record: [String: Any] = [
        "terminalID": Int(terminalID.rawValue), "terminalSequence": Int(sequence), "kind": "purse-debit", "cardUID": uid,
        "amount": amount, "balanceBefore": 10_000, "counterBefore": counter, "outcome": outcome, "createdAt": 1_767_225_600,
    ]
    if outcome == "done" {
        record["balanceAfter"] = 10_000 - amount
        record["counterAfter"] = counter + 1
    }
    return record
}
