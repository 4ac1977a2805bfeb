import Foundation
import SettlementCore
import Testing

@Suite struct RequestSigningTests {
    let secret: [UInt8] = Array(0..<32)
    let now = Date(timeIntervalSince1970: 1_750_000_000)
    let body = Data(#"{"records":[]}"#.utf8)

    func signed(method: String = "POST", path: String = "/v1/terminals/12/records", body: Data? = nil, at date: Date? = nil) -> [String: String] {
        Dictionary(uniqueKeysWithValues: RequestSigning.headers(key: .terminal(12), secret: secret, method: method, pathAndQuery: path,
                                                                body: body ?? self.body, now: date ?? now))
    }

    func verify(_ headers: [String: String], method: String = "POST", path: String = "/v1/terminals/12/records", body: Data? = nil,
                now: Date? = nil) async throws -> (key: RequestSigning.Key, nonce: String) {
        // As settlementd does: the headers first, then the caller's secret (terminal 12 is the only one known), then
        // the signature over the body.
        let request = try RequestSigning.signed(header: { headers[$0] }, now: now ?? self.now)
        guard request.key == .terminal(12) else { throw RequestSigning.Refusal.badSignature }
        try request.check(secret: secret, method: method, pathAndQuery: path, body: body ?? self.body)
        return (request.key, request.nonce)
    }

    @Test func aSignedRequestVerifies() async throws {
        let headers = signed()
        let result = try await verify(headers)
        #expect(result.key == .terminal(12))
        #expect(result.nonce == headers[RequestSigning.nonceHeader])
        // Inside the window either way.
        _ = try await verify(headers, now: now.addingTimeInterval(TimeInterval(RequestSigning.window)))
        _ = try await verify(headers, now: now.addingTimeInterval(-TimeInterval(RequestSigning.window)))
    }

    @Test func anyChangedPartFailsTheSignature() async throws {
        let headers = signed()
        var changedBody = body
        changedBody[3] ^= 0x01
        await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(headers, body: changedBody) }
        await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(headers, path: "/v1/terminals/12/recordz") }
        await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(headers, path: "/v1/terminals/12/records?x=1") }
        await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(headers, method: "PUT") }
        var timestamp = headers
        timestamp[RequestSigning.timestampHeader] = String(Int64(now.timeIntervalSince1970) + 1)
        await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(timestamp) }
        var nonce = headers
        nonce[RequestSigning.nonceHeader] = String(repeating: "b", count: 32)
        await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(nonce) }
        var signature = headers
        let given = headers[RequestSigning.signatureHeader]!
        signature[RequestSigning.signatureHeader] = String(given.dropLast()) + (given.last == "0" ? "1" : "0")
        await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(signature) }
        // Another key (an unknown caller) is refused the same way.
        var other = headers
        other[RequestSigning.keyHeader] = "terminal:13"
        await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(other) }
    }

    @Test func everyDigitOfTheSignatureCounts() async throws {
        // Deterministic (the other signatures differ from the right one in random digits: a compare that skipped some
        // digits would pass them now and then).
        let headers = signed()
        let given = Array(headers[RequestSigning.signatureHeader]!)
        for index in 3..<given.count {
            var changed = given
            changed[index] = given[index] == "0" ? "1" : "0"
            let tampered = headers.merging([RequestSigning.signatureHeader: String(changed)]) { $1 }
            await #expect(throws: RequestSigning.Refusal.badSignature, "digit \(index)") { _ = try await verify(tampered) }
        }
    }

    @Test func anUnknownCallerIsRefusedWhateverSecretItSignsWith() async throws {
        // terminal:13 has no secret: signing with none (the empty key) must not pass as the secret it lacks.
        for secret in [[], Array(repeating: UInt8(0), count: 32)] as [[UInt8]] {
            let headers = Dictionary(uniqueKeysWithValues: RequestSigning.headers(key: .terminal(13), secret: secret, method: "POST",
                                                                                  pathAndQuery: "/v1/terminals/12/records", body: body, now: now))
            await #expect(throws: RequestSigning.Refusal.badSignature) { _ = try await verify(headers) }
        }
    }

    @Test func staleTimestampsAreRefused() async throws {
        let window = TimeInterval(RequestSigning.window)
        await #expect(throws: RequestSigning.Refusal.staleTimestamp(skew: -(RequestSigning.window + 1))) {
            _ = try await verify(signed(), now: now.addingTimeInterval(window + 1))
        }
        await #expect(throws: RequestSigning.Refusal.staleTimestamp(skew: RequestSigning.window + 1)) {
            _ = try await verify(signed(at: now.addingTimeInterval(window + 1)))
        }
    }

    @Test func malformedHeadersAreRefused() async throws {
        let good = signed()
        for name in [RequestSigning.keyHeader, RequestSigning.timestampHeader, RequestSigning.nonceHeader, RequestSigning.signatureHeader] {
            var headers = good
            headers[name] = nil
            await #expect(throws: RequestSigning.Refusal.missingHeader(name)) { _ = try await verify(headers) }
        }
        let cases: [(String, String, String)] = [
            (RequestSigning.keyHeader, "terminal:0", "key"), (RequestSigning.keyHeader, "terminal:70000", "key"),
            (RequestSigning.keyHeader, "root", "key"), (RequestSigning.keyHeader, "admin:", "key"), (RequestSigning.keyHeader, "admin:a b", "key"),
            (RequestSigning.timestampHeader, "12.5", "timestamp"), (RequestSigning.timestampHeader, "", "timestamp"),
            (RequestSigning.nonceHeader, "short", "nonce"), (RequestSigning.nonceHeader, String(repeating: "x", count: 65), "nonce"),
            (RequestSigning.nonceHeader, "0123456789abcdef/", "nonce"),
            (RequestSigning.signatureHeader, "v2=" + String(repeating: "0", count: 64), "signature"),
            (RequestSigning.signatureHeader, "v1=abc", "signature"),
        ]
        for (name, value, what) in cases {
            var headers = good
            headers[name] = value
            await #expect(throws: RequestSigning.Refusal.malformed(what), "\(name): \(value)") { _ = try await verify(headers) }
        }
    }

    @Test func adminKeysParse() {
        #expect(RequestSigning.Key(header: "admin:ops-1") == .admin("ops-1"))
        #expect(RequestSigning.Key(header: "terminal:65535") == .terminal(65_535))
        #expect(RequestSigning.Key(header: "admin:ops-1")?.description == "admin:ops-1")
        // One spelling per key.
        for other in ["terminal:02", "terminal:+2", "terminal: 2", "terminal:2 ", "terminal:0", "terminal:65536", "terminal:", "admin:", "Terminal:2"] {
            #expect(RequestSigning.Key(header: other) == nil, "\(other)")
        }
    }
}
