import DaemonSupport
import Foundation
import Testing
import TestSupport

/// An attacker (or a buggy POS UI) on the control socket: every bad request gets an error line or the connection is
/// dropped, and cardd keeps serving (issue 10, item 8).
@Suite(.serialized) struct ControlAPITests {
    func errorCode(_ lines: [[String: Any]]) -> String? {
        (lines.last?["error"] as? [String: Any])?["code"] as? String
    }

    @Test func badRequestsGetAnErrorLineAndTheConnectionStaysUsable() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let client = try ControlSocketClient(path: box.socketPath)
        defer { client.close() }
        func ask(_ line: String) throws -> [String: Any] {
            try client.send(rawLine: line)
            let data = try #require(try client.readLine(timeout: .seconds(10)))
            return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        }
        func code(_ answer: [String: Any]) -> String? { (answer["error"] as? [String: Any])?["code"] as? String }
        let cases: [(String, String)] = [
            ("hello there", "bad-json"),
            ("[1, 2, 3]", "bad-request"),
            (#"{"amount": "1.00"}"#, "bad-request"),
            (#"{"command": "launch-missiles"}"#, "unknown-command"),
            (#"{"command": 7}"#, "bad-request"),
            (#"{"command": "charge", "amount": 12.5}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "12.345"}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "-1"}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "1e3"}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "0.00"}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "NaN"}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "99999999999999999999"}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "1.00", "timeoutSeconds": 0}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "1.00", "timeoutSeconds": "soon"}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "1.00", "saleID": ""}"#, "bad-arguments"),
            (#"{"command": "charge", "amount": "1.00", "saleID": "\#(String(repeating: "x", count: 65))"}"#, "bad-arguments"),
            (#"{"command": "pin", "saleID": "s", "pin": "12ab56"}"#, "bad-arguments"),
            (#"{"command": "pin", "saleID": "s"}"#, "bad-arguments"),
            (#"{"command": "water-pulses", "count": 5}"#, "bad-request"),
            (#"{"command": "water-pulses", "count": -5}"#, "bad-arguments"),
        ]
        for (request, expected) in cases {
            let answer = try ask(request)
            #expect(code(answer) == expected, "\(request) → \(answer)")
            let message = (answer["error"] as? [String: Any])?["message"] as? String ?? ""
            #expect(!message.isEmpty && !message.contains("\n"), "one line saying why: \(answer)")
        }
        // Nothing was armed, and the same connection still answers.
        let status = try ask(#"{"command": "status"}"#)
        #expect(status["ok"] as? Bool == true && status["openSale"] == nil, "\(status)")
        let version = try ask(#"{"command": "version"}"#)
        #expect(version["ok"] as? Bool == true && version["version"] as? String != nil && version["commit"] as? String != nil, "\(version)")
        // Bytes that are not UTF-8.
        try client.send(bytes: [0xFF, 0xFE, 0x7B, 0x0A])
        let binary = try #require(try client.readLine(timeout: .seconds(10)))
        #expect(String(decoding: binary, as: UTF8.self).contains("\"error\""))
        #expect(try ask(#"{"command": "status"}"#)["ok"] as? Bool == true)
        #expect(box.stop() == 0)
    }

    /// A line longer than 64 KiB: `line-too-long`, the connection closed; cardd still serves.
    @Test func aHugeLineIsRefusedAndDropped() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let client = try ControlSocketClient(path: box.socketPath)
        defer { client.close() }
        let huge = #"{"command": "status", "pad": ""# + String(repeating: "A", count: 100 * 1024) + #""}"#
        try? client.send(rawLine: huge, timeout: .seconds(10))
        var lines: [String] = []
        while let data = try? client.readLine(timeout: .seconds(10)) { lines.append(String(decoding: data, as: UTF8.self)) }
        #expect(lines.count == 1 && lines[0].contains("line-too-long"), "\(lines)")
        #expect(try box.status()["ok"] as? Bool == true)
        #expect(box.process?.isRunning == true)
        #expect(box.stop() == 0)
    }

    /// Many clients at once: each is answered (`status`) or told `busy`; none is left hanging and cardd serves on.
    @Test func manyConcurrentClientsAreServedOrToldBusy() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let clients = (0..<48).map { _ in Background { try box.raw(#"{"command": "status"}"#, timeout: .seconds(20)) } }
        var answered = 0, busy = 0
        for client in clients {
            let lines = try client.value(timeout: 60)
            if lines.last?["ok"] as? Bool == true { answered += 1 }
            if errorCode(lines) == "busy" { busy += 1 }
        }
        #expect(answered + busy == 48 && answered >= 1, "answered \(answered), busy \(busy)")
        #expect(try box.status()["ok"] as? Bool == true)
        #expect(box.stop() == 0)
    }

    /// A client that goes away in the middle of `charge`: its sale is cancelled (nobody would hear the result), no
    /// card is charged for it, and the next sale can be armed.
    @Test func aClientThatLeavesMidChargeChargesNobody() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let events = try EventWatcher(box)
        defer { events.close() }
        try box.takeCard()
        let client = try ControlSocketClient(path: box.socketPath)
        try client.send(rawLine: #"{"command": "charge", "amount": "9.00", "saleID": "ghost", "timeoutSeconds": 60}"#)
        try events.wait(for: "sale-armed") { $0["saleID"] as? String == "ghost" }
        client.close()
        try events.wait(for: "sale-cancelled") { $0["saleID"] as? String == "ghost" }
        #expect(try box.status()["openSale"] == nil)
        let seen = events.events.count
        try box.cardBack()
        #expect(try events.wait(for: "balance", after: seen)["balanceYuan"] as? String == "100.00")
        #expect(try box.journal("purse-debit").isEmpty)
        // `arm` is fire-and-forget: its sale stays armed after the connection closes.
        let armed = try box.raw(#"{"command": "arm", "amount": "1.00", "saleID": "kept", "timeoutSeconds": 30}"#)
        #expect(armed.last?["ok"] as? Bool == true, "\(armed)")
        Thread.sleep(forTimeInterval: 0.3)
        #expect(try box.status()["openSale"] as? String == "kept")
        #expect(box.stop() == 0)
    }

    /// An `events` follower that never reads does not stop the daemon from serving others.
    @Test func aStalledEventReaderDoesNotBlockTheDaemon() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        let stalled = try ControlSocketClient(path: box.socketPath)
        defer { stalled.close() }
        try stalled.send(rawLine: #"{"command": "events"}"#)
        for _ in 0..<5 { try box.retap() }
        #expect(try box.status()["taps"] as? Int ?? 0 >= 5)
        #expect(box.stop() == 0)
    }
}
