import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import CampusCard
import Foundation
import SettlementCore
import SettlementSQLite
import Testing
@testable import SettlementServer

@Suite("settlementd over HTTP on loopback")
struct SettlementServerTests {
    @Test("GET /v1/time is unsigned and tells the server's clock and the signing window")
    func time() async throws {
        try await withServer { server in
            let reply = try await server.send(.GET, "/v1/time", key: nil)
            #expect(reply.status == 200)
            let unix = try #require(reply.json["unixTime"] as? Int)
            #expect(abs(unix - Int(Date().timeIntervalSince1970)) <= 5)
            #expect(reply.json["signingWindow"] as? Int == 300)
        }
    }

    @Test("an upload is acknowledged per record; a repeat returns the original acknowledgement; other content is a conflict")
    func uploadRepeatConflict() async throws {
        try await withServer { server in
            let first = try await server.terminal(.POST, "/v1/transactions", json: ["records": [record(sequence: 1), record(sequence: 2, outcome: "not-done")]])
            #expect(first.status == 200)
            let acks = try #require(first.json["acks"] as? [[String: Any]])
            #expect(acks.map { $0["terminalSequence"] as? Int } == [1, 2])
            #expect(acks.map { $0["status"] as? String } == ["accepted", "accepted"])

            let again = try await server.terminal(.POST, "/v1/transactions", json: ["records": [record(sequence: 1), record(sequence: 2, outcome: "not-done")]])
            #expect(again.status == 200)
            let repeated = try #require(again.json["acks"] as? [[String: Any]])
            #expect(repeated.map { $0["status"] as? String } == ["duplicate", "duplicate"])
            for (original, repeat_) in zip(acks, repeated) {
                #expect(original["booking"] as? String == repeat_["booking"] as? String)
                #expect(original["receivedAt"] as? Int == repeat_["receivedAt"] as? Int)
                #expect(original["flags"] as? [String] == repeat_["flags"] as? [String])
            }

            let other = try await server.terminal(.POST, "/v1/transactions", json: ["records": [record(sequence: 1, amount: 999)]])
            #expect(other.status == 200)
            let conflict = try #require((other.json["acks"] as? [[String: Any]])?.first)
            #expect(conflict["status"] as? String == "conflict")
            let flags = try await server.admin(.GET, "/v1/admin/reports/flags")
            #expect((flags.json["flags"] as? [[String: Any]])?.contains { $0["code"] as? String == "content-conflict" } == true)
        }
    }

    @Test("every refused signature is a 401 with a one-line JSON error, and writes nothing")
    func unauthorized() async throws {
        try await withServer { server in
            let body = Array(try JSONSerialization.data(withJSONObject: ["records": [record(sequence: 40)]]))
            let me = RequestSigning.Key.terminal(terminalID.rawValue)
            var cases: [(String, Reply)] = []
            cases.append(("unsigned", try await server.send(.POST, "/v1/transactions", body: body, key: nil)))
            cases.append(("unknown terminal", try await server.send(.POST, "/v1/transactions", body: body, key: .terminal(999), secret: terminalSecret)))
            cases.append(("unknown terminal, empty secret", try await server.send(.POST, "/v1/transactions", body: body, key: .terminal(999), secret: [])))
            cases.append(("bad signature", try await server.send(.POST, "/v1/transactions", body: body, key: me, tamper: true)))
            cases.append(("wrong secret", try await server.send(.POST, "/v1/transactions", body: body, key: me, secret: Array(repeating: 1, count: 32))))
            // Well outside the ±300 s window: at +301 a loaded machine that took a second to answer saw +300 and
            // accepted it (the window's own edges are RequestSigningTests').
            cases.append(("stale timestamp", try await server.send(.POST, "/v1/transactions", body: body, key: me, now: Date().addingTimeInterval(-400))))
            cases.append(("future timestamp", try await server.send(.POST, "/v1/transactions", body: body, key: me, now: Date().addingTimeInterval(400))))
            // Timestamps at Int64's ends: the skew must not overflow (the trap took the whole service down, unsigned).
            for stamp in ["-9223372036854775808", "-9223372036854775000", "9223372036854775807", "99999999999999"] {
                let headers = [(RequestSigning.keyHeader, "admin:nobody"), (RequestSigning.timestampHeader, stamp),
                               (RequestSigning.nonceHeader, "abcdefghijklmnop"), (RequestSigning.signatureHeader, "v1=" + String(repeating: "0", count: 64))]
                cases.append(("timestamp \(stamp)", try await server.send(.GET, "/v1/parameters", key: nil, extraHeaders: headers)))
                cases.append(("terminal, timestamp \(stamp)", try await server.send(.POST, "/v1/transactions", body: body, key: nil,
                                                                                    extraHeaders: headers.map { $0.0 == RequestSigning.keyHeader ? ($0.0, me.description) : $0 })))
            }
            cases.append(("malformed nonce", try await server.send(.POST, "/v1/transactions", body: body, key: me, nonce: "short")))
            cases.append(("unknown admin", try await server.send(.GET, "/v1/admin/reports/flags", key: .admin("nobody"), secret: adminSecret)))
            // A replay: the same signed request twice; the first is refused for its content (400), the second for its nonce.
            let nonce = "replayed-nonce-0123456789"
            let bad = Array(#"{"records": []}"#.utf8)
            let firstUse = try await server.send(.POST, "/v1/transactions", body: bad, key: me, nonce: nonce)
            #expect(firstUse.status == 400)
            cases.append(("replayed nonce", try await server.send(.POST, "/v1/transactions", body: body, key: me, nonce: nonce)))
            // A disabled terminal, correctly signed.
            try await server.store.putTerminal(TerminalInfo(id: 8, merchant: "shop", secret: terminalSecret, enabled: false))
            cases.append(("disabled terminal", try await server.send(.POST, "/v1/transactions", body: body, key: .terminal(8))))

            for (name, reply) in cases {
                #expect(reply.status == 401, "\(name): \(reply.status)")
                #expect(reply.code == "unauthorized", "\(name)")
                #expect(!reply.message.isEmpty && !reply.message.contains("\n"), "\(name): \(reply.message)")
                #expect(!reply.message.contains(RequestSigning.signature(secret: terminalSecret, method: "POST", pathAndQuery: "/", timestamp: 0, nonce: "x", body: []).prefix(10)))
            }
            // Nothing was written: the record is new to the store, and no flag was raised.
            let flags = try await server.admin(.GET, "/v1/admin/reports/flags")
            #expect((flags.json["flags"] as? [Any])?.isEmpty == true)
            let upload = try await server.send(.POST, "/v1/transactions", body: body, key: me)
            #expect((upload.json["acks"] as? [[String: Any]])?.first?["status"] as? String == "accepted")
        }
    }

    @Test("admin endpoints refuse terminal keys and terminal endpoints refuse admin keys (403, nothing written)")
    func keyKinds() async throws {
        try await withServer { server in
            let asTerminal = try await server.terminal(.POST, "/v1/admin/accounts", json: ["name": "Li Lei"])
            #expect(asTerminal.status == 403)
            #expect(asTerminal.code == "forbidden")
            let asAdmin = try await server.admin(.POST, "/v1/transactions", json: ["records": [record(sequence: 1)]])
            #expect(asAdmin.status == 403)
            #expect(try await server.store.account(1) == nil)
            // Other spellings of an admin path (the router skips empty segments) are no path at all, for either key.
            for path in ["//v1/admin/accounts", "/v1//admin/accounts", "///v1///admin///accounts", "/v1/admin/accounts/",
                         "/v1/./admin/accounts", "/v1/x/../admin/accounts"] {
                let sneaked = try await server.terminal(.POST, path, json: ["name": "Mallory", "initialBalance": 1_000_000])
                #expect(sneaked.status == 404 && sneaked.code == "not-found", "\(path): \(sneaked.status) \(sneaked.message)")
                #expect(try await server.admin(.POST, path, json: ["name": "Li Lei"]).status == 404, "\(path)")
            }
            #expect(try await server.terminal(.POST, "/v1//transactions", json: ["records": [record(sequence: 1)]]).status == 404)
            let records = try await server.store.rowCounts()["records"] ?? 0
            #expect(try await server.store.account(1) == nil && records == 0)
            let upload = try await server.terminal(.POST, "/v1/transactions", json: ["records": [record(sequence: 1)]])
            #expect((upload.json["acks"] as? [[String: Any]])?.first?["status"] as? String == "accepted")
        }
    }

    @Test("a store that fails answers 500 storage without its internals (the path, the database's words)")
    func storageFailure() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("settle-fail-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteSettlementStore(path: directory.appendingPathComponent("settlement.sqlite").path)
        try await withServer(store: store) { server in
            try store.close()
            for reply in [try await server.admin(.GET, "/v1/admin/reports/flags"),
                          try await server.terminal(.POST, "/v1/transactions", json: ["records": [record(sequence: 1)]])] {
                #expect(reply.status == 500 && reply.code == "storage", "\(reply.status) \(reply.message)")
                #expect(reply.message.contains("retry later") && !reply.message.contains(directory.path), "\(reply.message)")
            }
        }
    }

    @Test("a body over 2 MiB is refused with 413, declared or streamed")
    func tooLarge() async throws {
        try await withServer { server in
            let big = [UInt8](repeating: UInt8(ascii: " "), count: SettlementLimits.maxBodyBytes + 1)
            let declared = try await server.send(.POST, "/v1/transactions", body: big, key: .terminal(terminalID.rawValue))
            #expect(declared.status == 413)
            #expect(declared.code == "too-large")

            // Chunked, no Content-Length, with signing headers that pass the checks made before the body (form,
            // window, a known key): refused once the cap is passed while reading.
            var request = HTTPClientRequest(url: server.base + "/v1/transactions")
            request.method = .POST
            for (name, value) in RequestSigning.headers(key: .terminal(terminalID.rawValue), secret: terminalSecret, method: "POST",
                                                        pathAndQuery: "/v1/transactions", body: [UInt8]()) {
                request.headers.add(name: name, value: value)
            }
            let chunk = ByteBuffer(repeating: UInt8(ascii: " "), count: 64 * 1024)
            let chunks = Array(repeating: chunk, count: 40)
            request.body = .stream(chunks.async, length: .unknown)
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            #expect(response.status.code == 413)
            // Just under the cap is read, and then refused for its signature, not its size.
            let under = [UInt8](repeating: UInt8(ascii: " "), count: SettlementLimits.maxBodyBytes)
            let fits = try await server.send(.POST, "/v1/transactions", body: under, key: .terminal(terminalID.rawValue), tamper: true)
            #expect(fits.status == 401 && fits.message.contains("signature does not match"), "\(fits.message)")
        }
    }

    @Test("each malformed field is a 400 with a one-line message naming it")
    func malformedFields() async throws {
        try await withServer { server in
            func with(_ change: (inout [String: Any]) -> Void) -> [String: Any] {
                var r = record(sequence: 100)
                change(&r)
                return ["records": [r]]
            }
            let cases: [(String, Any)] = [
                ("records[0].terminalID", with { $0["terminalID"] = 0 }),
                ("records[0].terminalSequence", with { $0["terminalSequence"] = -1 }),
                ("records[0].terminalSequence", with { $0["terminalSequence"] = 4_294_967_296 }),
                ("records[0].kind", with { $0["kind"] = "purse-steal" }),
                ("records[0].cardUID", with { $0["cardUID"] = "XYZXYZXY" }),
                ("records[0].cardUID", with { $0["cardUID"] = "A1B2C3D4E" }),
                ("records[0].cardSerial", with { $0["cardSerial"] = 0 }),
                ("records[0].cardSerial", with { $0["cardSerial"] = NSNull() }),
                ("records[0].amount", with { $0["amount"] = 0 }),
                ("records[0].amount", with { $0["amount"] = -5 }),
                ("records[0].amount", with { $0["amount"] = 2_147_483_648 }),
                ("records[0].amount", with { $0["amount"] = 1.5 }),
                ("records[0].amount", with { $0["amount"] = "250" }),
                ("records[0].amount", with { $0.removeValue(forKey: "amount") }),
                ("records[0].balanceBefore", with { $0["balanceBefore"] = -1 }),
                ("records[0].counterBefore", with { $0["counterBefore"] = 65_536 }),
                ("records[0].consumption", with { $0["consumption"] = -1 }),
                ("records[0].outcome", with { $0["outcome"] = "maybe" }),
                ("records[0]", with { $0.removeValue(forKey: "balanceAfter") }),
                ("records[0]", with { $0["outcome"] = "not-done" }),
                ("records[0].balanceAfter", with { $0["balanceAfter"] = -3 }),
                ("records[0].counterAfter", with { $0["counterAfter"] = 70_000 }),
                ("records[0].createdAt", with { $0["createdAt"] = 0 }),
                ("records[0].createdAt", with { $0["createdAt"] = 9_999_999_999 }),
                ("records", ["records": [Any]()]),
                ("records", ["records": (1...1001).map { record(sequence: UInt32($0)) }]),
                ("records", ["batch": [Any]()]),
                ("terminalSequence 100", ["records": [record(sequence: 100), record(sequence: 100)]]),
            ]
            // Another terminal's record: well formed, but not this terminal's to upload.
            let foreign = try await server.terminal(.POST, "/v1/transactions", json: with { $0["terminalID"] = 8 })
            #expect(foreign.status == 403 && foreign.code == "forbidden" && foreign.message.contains("records[0].terminalID"), "\(foreign.status) \(foreign.message)")
            for (field, json) in cases {
                let reply = try await server.terminal(.POST, "/v1/transactions", json: json)
                #expect(reply.status == 400, "\(field): \(reply.status) \(reply.message)")
                #expect(reply.code == "bad-request")
                #expect(reply.message.contains(field), "\(field): \(reply.message)")
                #expect(!reply.message.contains("\n"))
            }
            let notJSON = try await server.send(.POST, "/v1/transactions", body: Array("records=1".utf8), key: .terminal(terminalID.rawValue))
            #expect(notJSON.status == 400)
            #expect(notJSON.message.contains("not valid JSON"))
            let array = try await server.send(.POST, "/v1/transactions", body: Array("[1,2]".utf8), key: .terminal(terminalID.rawValue))
            #expect(array.status == 400)
            // A null body, where an object is expected, is named as the body (not as a field without a name).
            for path in ["/v1/transactions", "/v1/loads"] {
                let null = try await server.send(.POST, path, body: Array("null".utf8), key: .terminal(terminalID.rawValue))
                #expect(null.status == 400 && null.message.hasPrefix("the body is "), "\(path): \(null.message)")
            }
            let adminNull = try await server.send(.POST, "/v1/admin/accounts", body: Array("null".utf8), key: .admin(adminName))
            #expect(adminNull.status == 400 && adminNull.message.hasPrefix("the body is "), "\(adminNull.message)")
            // Queries and paths too.
            for path in ["/v1/blacklist?after=-1", "/v1/blacklist?limit=0", "/v1/blacklist?limit=1001", "/v1/blacklist?after=1e3"] {
                let reply = try await server.terminal(.GET, path)
                #expect(reply.status == 400, "\(path)")
            }
            for path in ["/v1/admin/cards/0", "/v1/admin/cards/+5", "/v1/admin/cards/4294967296", "/v1/admin/accounts/abc",
                         "/v1/admin/reports/daily?day=2026-02-30", "/v1/admin/reports/daily", "/v1/admin/reports/flags?limit=x"] {
                let reply = try await server.admin(.GET, path)
                #expect(reply.status == 400, "\(path): \(reply.status)")
                #expect(reply.code == "bad-request")
            }
            // Nothing of it was stored.
            let upload = try await server.terminal(.POST, "/v1/transactions", json: ["records": [record(sequence: 100)]])
            #expect((upload.json["acks"] as? [[String: Any]])?.first?["status"] as? String == "accepted")
        }
    }

    @Test("a body that readers could read differently (a key twice, 1e3 for a count) or nested past reason is a 400 naming where; nothing written")
    func ambiguousBodies() async throws {
        try await withServer { server in
            let clean = try JSONSerialization.data(withJSONObject: ["records": [record(sequence: 100)]], options: .sortedKeys)
            let text = String(decoding: clean, as: UTF8.self)
            #expect(text.contains(#""amount":250,"#))
            func amount(_ spelled: String) -> String { text.replacingOccurrences(of: #""amount":250,"#, with: spelled) }
            let cases: [(String, String)] = [
                ("records[0].amount is given twice", amount(#""amount":250,"amount":99999,"#)),
                ("records[0].amount is given twice", amount(#""amount":250,"\u0061mount":99999,"#)),
                ("records is given twice", text.replacingOccurrences(of: #"{"records":"#, with: #"{"records":[],"records":"#)),
                ("records[0].amount is 2.5e2", amount(#""amount":2.5e2,"#)),
                ("records[0].amount is 250.0", amount(#""amount":250.0,"#)),
                ("records[0].amount is 25E1", amount(#""amount":25E1,"#)),
                ("deeper than", #"{"records":"# + String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000) + "}"),
            ]
            for (expected, body) in cases {
                let reply = try await server.send(.POST, "/v1/transactions", body: Array(body.utf8), key: .terminal(terminalID.rawValue))
                #expect(reply.status == 400 && reply.code == "bad-request" && reply.message.contains(expected),
                        "\(expected): \(reply.status) \(reply.message)")
                #expect(!reply.message.contains("\n"))
            }
            // Encodings JSONDecoder reads and the check would not: refused as not JSON.
            let twice = #"{"name":"Wei","initialBalance":100,"initialBalance":900000}"#
            for (name, bytes) in [("a byte-order mark", [0xEF, 0xBB, 0xBF] + Array(twice.utf8)),
                                  ("UTF-16", Array(twice.utf16).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }),
                                  ("a byte-order mark on an upload", [0xEF, 0xBB, 0xBF] + Array(amount(#""amount":250,"amount":99999,"#).utf8))] {
                let path = name.contains("upload") ? "/v1/transactions" : "/v1/admin/accounts"
                let key: RequestSigning.Key = name.contains("upload") ? .terminal(terminalID.rawValue) : .admin(adminName)
                let reply = try await server.send(.POST, path, body: bytes, key: key)
                #expect(reply.status == 400 && reply.message.contains("not valid JSON in UTF-8"), "\(name): \(reply.status) \(reply.message)")
            }
            let account = try await server.send(.POST, "/v1/admin/accounts", body: Array(#"{"name":"Wei","initialBalance":100,"initialBalance":900000}"#.utf8),
                                                 key: .admin(adminName))
            #expect(account.status == 400 && account.message.contains("initialBalance is given twice"), "\(account.message)")
            let load = try await server.send(.POST, "/v1/loads", body: Array(#"{"reference":"load-0001","cardSerial":7,"amount":1e4,"balanceBefore":0,"counterBefore":1}"#.utf8),
                                              key: .terminal(terminalID.rawValue))
            #expect(load.status == 400 && load.message.contains("amount is 1e4"), "\(load.message)")
            // Nothing of it was stored: the record is new, and no account was opened.
            let upload = try await server.send(.POST, "/v1/transactions", body: Array(clean), key: .terminal(terminalID.rawValue))
            #expect((upload.json["acks"] as? [[String: Any]])?.first?["status"] as? String == "accepted", "\(upload.message)")
            let none = try await server.admin(.GET, "/v1/admin/accounts/1")
            #expect(none.status == 404, "\(none.status) \(none.message)")
        }
    }

    @Test("admin: open an account, issue a card, report it lost (a blacklist row with a new version), found (a remove row)")
    func adminFlows() async throws {
        try await withServer { server in
            let opened = try await server.admin(.POST, "/v1/admin/accounts", json: ["name": "Han Meimei", "initialBalance": 5_000])
            #expect(opened.status == 201)
            let accountID = try #require(opened.json["id"] as? Int)
            let shown = try await server.admin(.GET, "/v1/admin/accounts/\(accountID)")
            #expect(shown.json["name"] as? String == "Han Meimei")
            #expect(shown.json["balance"] as? Int == 5_000)
            #expect(try await server.admin(.GET, "/v1/admin/accounts/999999").status == 404)

            let issued = try await server.admin(.POST, "/v1/admin/cards", json: ["serial": 1001, "uid": "a1b2c3d4", "accountID": accountID])
            #expect(issued.status == 201)
            #expect(issued.json["uid"] as? String == "A1B2C3D4")
            #expect(issued.json["status"] as? String == "active")
            #expect(try await server.admin(.POST, "/v1/admin/cards", json: ["serial": 1001, "uid": "0A0B0C0D", "accountID": accountID]).status == 409)
            #expect(try await server.admin(.POST, "/v1/admin/cards", json: ["serial": 1002, "uid": "A1B2C3D4", "accountID": accountID]).status == 409)
            #expect(try await server.admin(.POST, "/v1/admin/cards", json: ["serial": 1003, "uid": "0A0B0C0E", "accountID": 999_999]).status == 404)

            let before = try await server.terminal(.GET, "/v1/blacklist?after=0")
            let startVersion = try #require(before.json["version"] as? Int)

            let lost = try await server.admin(.POST, "/v1/admin/cards/1001/lost", json: ["reason": "reported at the office"])
            #expect(lost.status == 200)
            let lostVersion = try #require(lost.json["blacklistVersion"] as? Int)
            #expect(lostVersion > startVersion)
            #expect((lost.json["card"] as? [String: Any])?["status"] as? String == "lost")
            let page = try await server.terminal(.GET, "/v1/blacklist?after=\(startVersion)")
            let added = try #require((page.json["changes"] as? [[String: Any]])?.last)
            #expect(added["serial"] as? Int == 1001)
            #expect(added["action"] as? String == "add")
            #expect(added["version"] as? Int == lostVersion)
            #expect(page.json["version"] as? Int == lostVersion)

            let found = try await server.admin(.POST, "/v1/admin/cards/1001/found")
            #expect(found.status == 200)
            let foundVersion = try #require(found.json["blacklistVersion"] as? Int)
            #expect(foundVersion > lostVersion)
            let next = try await server.terminal(.GET, "/v1/blacklist?after=\(lostVersion)")
            let removed = try #require((next.json["changes"] as? [[String: Any]])?.first)
            #expect(removed["action"] as? String == "remove")
            #expect(removed["serial"] as? Int == 1001)
            #expect(next.json["more"] as? Bool == false)
            #expect(try await server.admin(.GET, "/v1/admin/cards/1001").json["status"] as? String == "active")

            #expect(try await server.admin(.POST, "/v1/admin/cards/1001/cancel").status == 200)
            #expect(try await server.admin(.POST, "/v1/admin/cards/1001/found").status == 409)
            #expect(try await server.admin(.POST, "/v1/admin/cards/5555/lost").status == 404)
        }
    }

    @Test("terminals: registration shows the secret once and it signs; disabled terminals are refused")
    func terminals() async throws {
        try await withServer { server in
            let registered = try await server.admin(.POST, "/v1/admin/terminals", json: ["id": 31, "merchant": "canteen-2"])
            #expect(registered.status == 201)
            let secretHex = try #require(registered.json["secret"] as? String)
            #expect(secretHex.count == 64)
            let secret = try #require(Hex.bytes(secretHex))
            #expect(try await server.admin(.POST, "/v1/admin/terminals", json: ["id": 31, "merchant": "canteen-2"]).status == 409)
            let shown = try await server.admin(.GET, "/v1/admin/terminals/31")
            #expect(shown.json["secret"] == nil)
            #expect(shown.json["merchant"] as? String == "canteen-2")

            let parameters = try await server.send(.GET, "/v1/parameters", key: .terminal(31), secret: secret)
            #expect(parameters.status == 200)
            #expect(parameters.json["version"] is Int)

            #expect(try await server.admin(.POST, "/v1/admin/terminals/31/disable").json["enabled"] as? Bool == false)
            #expect(try await server.send(.GET, "/v1/parameters", key: .terminal(31), secret: secret).status == 401)
            #expect(try await server.admin(.POST, "/v1/admin/terminals/31/enable").json["enabled"] as? Bool == true)
            #expect(try await server.send(.GET, "/v1/parameters", key: .terminal(31), secret: secret).status == 200)
            // A disable and an allow-loads at once both hold (a read and a whole-row write had let one undo the other).
            for _ in 0..<20 {
                async let disabled = server.admin(.POST, "/v1/admin/terminals/31/disable")
                async let station = server.admin(.POST, "/v1/admin/terminals/31/allow-loads")
                let (first, second) = try await (disabled, station)
                #expect(first.json["enabled"] as? Bool == false && second.json["loads"] as? Bool == true)
                let now = try await server.admin(.GET, "/v1/admin/terminals/31")
                #expect(now.json["enabled"] as? Bool == false && now.json["loads"] as? Bool == true, "\(now.json)")
                _ = try await server.admin(.POST, "/v1/admin/terminals/31/enable")
                _ = try await server.admin(.POST, "/v1/admin/terminals/31/deny-loads")
            }
        }
    }

    @Test("terminal roles: only a load station prepares online loads; the role is set at registration or later")
    func loadStations() async throws {
        try await withServer { server in
            let account = try await server.admin(.POST, "/v1/admin/accounts", json: ["name": "Wei", "initialBalance": 50_000])
            let accountID = try #require(account.json["id"] as? Int)
            #expect(try await server.admin(.POST, "/v1/admin/cards", json: ["serial": 2001, "uid": "0badf00d", "accountID": accountID]).status == 201)
            let pos = try await server.admin(.POST, "/v1/admin/terminals", json: ["id": 31, "merchant": "canteen-2"])
            #expect(pos.status == 201 && pos.json["loads"] as? Bool == false)
            let station = try await server.admin(.POST, "/v1/admin/terminals", json: ["id": 32, "merchant": "office", "loads": true])
            #expect(station.status == 201 && station.json["loads"] as? Bool == true)
            #expect(try await server.admin(.POST, "/v1/admin/terminals", json: ["id": 33, "merchant": "x", "loads": "yes"]).status == 400)
            let secretHex = try #require(pos.json["secret"] as? String)
            let secret = try #require(Hex.bytes(secretHex))
            let prepare: [String: Any] = ["reference": "load-0001", "cardSerial": 2001, "amount": 10_000, "balanceBefore": 300, "counterBefore": 4]
            let refused = try await server.send(.POST, "/v1/loads", json: prepare, key: .terminal(31), secret: secret)
            #expect(refused.status == 403 && refused.message.contains("no station") && !refused.message.contains("\n"), "\(refused.message)")
            #expect(try await server.store.loadReferences(among: ["T31-load-0001"]).isEmpty)
            #expect(try await server.store.account(Int64(accountID))?.balance == 50_000)

            #expect(try await server.admin(.POST, "/v1/admin/terminals/31/allow-loads").json["loads"] as? Bool == true)
            #expect(try await server.admin(.GET, "/v1/admin/terminals/31").json["loads"] as? Bool == true)
            #expect(try await server.send(.POST, "/v1/loads", json: prepare, key: .terminal(31), secret: secret).status == 200)
            #expect(try await server.store.account(Int64(accountID))?.balance == 40_000)
            // Denied again: a new load is refused; the one in flight can still be finished.
            #expect(try await server.admin(.POST, "/v1/admin/terminals/31/deny-loads").json["loads"] as? Bool == false)
            var second = prepare
            second["reference"] = "load-0002"
            #expect(try await server.send(.POST, "/v1/loads", json: second, key: .terminal(31), secret: secret).status == 403)
            let reversed = try await server.send(.POST, "/v1/loads/load-0001/reverse", key: .terminal(31), secret: secret)
            #expect(reversed.status == 200 && reversed.json["phase"] as? String == "reversed")
            #expect(try await server.store.account(Int64(accountID))?.balance == 50_000)
            #expect(try await server.admin(.POST, "/v1/admin/terminals/99/allow-loads").status == 404)
            #expect(try await server.terminal(.POST, "/v1/admin/terminals/31/allow-loads").status == 403)
        }
    }

    @Test("online load: prepare (idempotent), confirm (idempotent), reverse refused after confirm; references are per terminal")
    func loads() async throws {
        try await withServer { server in
            let account = try await server.admin(.POST, "/v1/admin/accounts", json: ["name": "Wei", "initialBalance": 50_000])
            let accountID = try #require(account.json["id"] as? Int)
            #expect(try await server.admin(.POST, "/v1/admin/cards", json: ["serial": 2001, "uid": "0badf00d", "accountID": accountID]).status == 201)
            let prepare: [String: Any] = ["reference": "load-0001", "cardSerial": 2001, "amount": 10_000, "balanceBefore": 300, "counterBefore": 4]
            let prepared = try await server.terminal(.POST, "/v1/loads", json: prepare)
            #expect(prepared.status == 200, "\(prepared.message)")
            #expect(prepared.json["phase"] as? String == "prepared")
            #expect(prepared.json["reference"] as? String == "load-0001")
            #expect(try await server.terminal(.POST, "/v1/loads", json: prepare).json["phase"] as? String == "prepared")
            var different = prepare
            different["amount"] = 20_000
            #expect(try await server.terminal(.POST, "/v1/loads", json: different).status == 409)

            // Another terminal cannot settle this terminal's load.
            try await server.store.putTerminal(TerminalInfo(id: 9, merchant: "office", secret: terminalSecret))
            let foreign = try await server.send(.POST, "/v1/loads/load-0001/reverse", key: .terminal(9))
            #expect(foreign.status == 404)

            let confirm: [String: Any] = ["balanceAfter": 10_300, "counterAfter": 5]
            let confirmed = try await server.terminal(.POST, "/v1/loads/load-0001/confirm", json: confirm)
            #expect(confirmed.status == 200, "\(confirmed.message)")
            #expect(confirmed.json["phase"] as? String == "confirmed")
            #expect(try await server.terminal(.POST, "/v1/loads/load-0001/confirm", json: confirm).json["phase"] as? String == "confirmed")
            #expect(try await server.terminal(.POST, "/v1/loads/load-0001/reverse").status == 409)

            var second = prepare
            second["reference"] = "load-0002"
            second["counterBefore"] = 5
            second["balanceBefore"] = 10_300
            #expect(try await server.terminal(.POST, "/v1/loads", json: second).status == 200)
            let reversed = try await server.terminal(.POST, "/v1/loads/load-0002/reverse")
            #expect(reversed.json["phase"] as? String == "reversed")
            #expect(try await server.terminal(.POST, "/v1/loads/load-0002/reverse").json["phase"] as? String == "reversed")
            #expect(try await server.terminal(.POST, "/v1/loads/load-0002/confirm", json: confirm).status == 409)
            #expect(try await server.terminal(.POST, "/v1/loads/nosuchload/reverse").status == 404)
            #expect(try await server.terminal(.POST, "/v1/loads/bad/reverse").status == 400)
        }
    }

    @Test("online load: a confirmation the card's balance contradicts is a 409 flagged once; the load's uploaded record is booked from suspense")
    func loadMismatch() async throws {
        try await withServer { server in
            let account = try await server.admin(.POST, "/v1/admin/accounts", json: ["name": "Wei", "initialBalance": 50_000])
            let accountID = try #require(account.json["id"] as? Int)
            #expect(try await server.admin(.POST, "/v1/admin/cards", json: ["serial": 2001, "uid": "0badf00d", "accountID": accountID]).status == 201)
            func load(_ sequence: UInt32, amount: Int, before: Int, counter: Int) async throws -> String {
                let reference = OnlineLoadReference.of(terminal: terminalID, sequence: sequence)
                let prepare: [String: Any] = ["reference": reference, "cardSerial": 2001, "amount": amount, "balanceBefore": before, "counterBefore": counter]
                #expect(try await server.terminal(.POST, "/v1/loads", json: prepare).status == 200)
                return reference
            }
            func loadRecord(_ sequence: UInt32, amount: Int, before: Int, counter: Int) -> [String: Any] {
                ["terminalID": Int(terminalID.rawValue), "terminalSequence": Int(sequence), "kind": "purse-load", "cardUID": "0BADF00D",
                 "amount": amount, "balanceBefore": before, "counterBefore": counter, "outcome": "done", "createdAt": 1_767_225_600,
                 "balanceAfter": before + amount, "counterAfter": counter + 1]
            }
            func flagCodes() async throws -> [String] {
                try #require(try await server.admin(.GET, "/v1/admin/reports/flags").json["flags"] as? [[String: Any]]).compactMap { $0["code"] as? String }
            }
            let reference = try await load(5, amount: 10_000, before: 300, counter: 4)
            for _ in 0..<2 {
                let refused = try await server.terminal(.POST, "/v1/loads/\(reference)/confirm", json: ["balanceAfter": 10_299, "counterAfter": 5])
                #expect(refused.status == 409 && refused.code == "conflict")
            }
            #expect(try await flagCodes() == ["load-mismatch"])
            #expect(try await server.terminal(.POST, "/v1/loads/\(reference)/reverse").status == 409)
            // The station uploads its journal record: its confirmation from the upload is refused too (disputed), and
            // the record is booked from suspense, not as an office cash load.
            let upload = try await server.terminal(.POST, "/v1/transactions", json: ["records": [loadRecord(5, amount: 10_000, before: 300, counter: 4)]])
            let ack = try #require((upload.json["acks"] as? [[String: Any]])?.first)
            #expect(ack["booking"] as? String == "suspense" && ack["flags"] as? [String] == ["load-unconfirmed"])
            #expect(try await flagCodes() == ["load-unconfirmed", "load-mismatch"])
            // The hold stays out of the holder's account until the card office settles the load.
            #expect(try await server.admin(.GET, "/v1/admin/accounts/\(accountID)").json["balance"] as? Int == 40_000)
            // The card office reads the card and settles the load, named as its flag names it; the terminal may not.
            let stored = OnlineLoadReference.stored(reference, terminal: terminalID)
            let decision: [String: Any] = ["credited": true, "reason": "the card shows 103.00 and its log the load"]
            #expect(try await server.terminal(.POST, "/v1/admin/loads/\(stored)/settle", json: decision).status == 403)
            for (path, body) in [("/v1/admin/loads/\(reference)/settle", decision), ("/v1/admin/loads/T0-\(reference)/settle", decision),
                                 ("/v1/admin/loads/\(stored)/settle", ["credited": "yes", "reason": "x"]),
                                 ("/v1/admin/loads/\(stored)/settle", ["credited": true]),
                                 ("/v1/admin/loads/\(stored)/settle", ["credited": false, "reason": "line\nbreak"])] as [(String, [String: Any])] {
                let refused = try await server.admin(.POST, path, json: body)
                #expect(refused.status == 400 && refused.code == "bad-request", "\(path) \(body): \(refused.status) \(refused.message)")
            }
            #expect(try await server.admin(.POST, "/v1/admin/loads/T9-\(reference)/settle", json: decision).status == 404)
            #expect(try await flagCodes() == ["load-unconfirmed", "load-mismatch"])
            let settled = try await server.admin(.POST, "/v1/admin/loads/\(stored)/settle", json: decision)
            #expect(settled.status == 200 && settled.json["phase"] as? String == "confirmed" && settled.json["reference"] as? String == stored,
                    "\(settled.status) \(settled.message)")
            #expect(try await flagCodes() == ["load-settled", "load-unconfirmed", "load-mismatch"])
            // The hold cleared the suspense the record was booked from: the account stays where the prepare left it.
            #expect(try await server.admin(.GET, "/v1/admin/accounts/\(accountID)").json["balance"] as? Int == 40_000)

            // A load whose confirmation was lost is confirmed from its uploaded record, which then books nothing.
            _ = try await load(6, amount: 100, before: 10_300, counter: 5)
            let lost = try await server.terminal(.POST, "/v1/transactions", json: ["records": [loadRecord(6, amount: 100, before: 10_300, counter: 5)]])
            #expect((lost.json["acks"] as? [[String: Any]])?.first?["booking"] as? String == "nothing")
            #expect(try await flagCodes().count == 3)
            #expect(try await server.admin(.GET, "/v1/admin/accounts/\(accountID)").json["balance"] as? Int == 39_900)
            let card = try await server.admin(.GET, "/v1/admin/cards/2001")
            #expect(card.json["purseMirror"] as? Int == 10_400 && card.json["purseCounter"] as? Int == 6, "\(card.json)")
        }
    }

    @Test("unknown endpoints and methods answer with a JSON error")
    func unknownEndpoint() async throws {
        try await withServer { server in
            let missing = try await server.terminal(.GET, "/v1/nothing-here")
            #expect(missing.status == 404)
            #expect(missing.code == "not-found")
            // A served path with another method: 405 naming the methods it takes, signed or not, and nothing runs.
            let wrongMethod = try await server.terminal(.DELETE, "/v1/transactions")
            #expect(wrongMethod.status == 405 && wrongMethod.code == "method-not-allowed", "\(wrongMethod.status) \(wrongMethod.message)")
            #expect(wrongMethod.message.contains("POST"))
            let unsigned = try await server.send(.GET, "/v1/loads/load-1/confirm", key: nil)
            #expect(unsigned.status == 405 && unsigned.message.contains("POST"), "\(unsigned.status) \(unsigned.message)")
            let adminWrong = try await server.admin(.PUT, "/v1/admin/cards/1001/lost")
            #expect(adminWrong.status == 405)
            // One segment too many is no endpoint at all.
            #expect(try await server.admin(.POST, "/v1/admin/cards/1001/lost/again").status == 404)
        }
    }
}
