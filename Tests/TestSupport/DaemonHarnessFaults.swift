import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One entry of the terminal store, as `cardctl journal export --format csv` writes it.
public struct StoredEntry: Sendable, Hashable {
    public var sequence: UInt32
    public var kind: String
    public var cardUID: String
    public var amountFen: Int
    public var counterBefore: Int
    /// `open`, `done`, `not-done` or `undetermined`.
    public var outcome: String
    public var balanceAfterFen: Int?
    public var counterAfter: Int?
}

/// How a `charge` ended: `result` (`sale-done`, `sale-refused`, ...), the refusal's message, every answer line.
public struct SaleResult: Sendable {
    public var result: String?
    public var refusalMessage: String?
    public var lines: [String]
}

/// The card as the card office reads it (`cardctl card show --json`).
public struct CardReport: Sendable {
    public var balanceFen: Int
    public var counter: Int
    public var resolution: String
    public var mac: String
    public var status: String
}

/// Additions for the fault tests (kill -9, pcscd restarts, tears, a full disk): the control socket spoken directly
/// (no cardctl process per request, so a kill loop stays fast), the store's entries and the office's view of the card.
extension DaemonHarness {
    /// Sends one control request on cardd's socket and returns every answer line up to the last one (the line with
    /// `ok` or `error`). Throws when the daemon cannot be reached or closes the connection first.
    public func control(_ request: [String: Any], timeout: TimeInterval = 30) throws -> [[String: Any]] {
        try controlLines(request, timeout: timeout).compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// `control`, the answer lines as text.
    public func controlLines(_ request: [String: Any], timeout: TimeInterval = 30) throws -> [String] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard connected else { throw TestSetupError("cannot connect to \(socketPath): \(String(cString: strerror(errno)))") }
        var limit = timeval(tv_sec: Int(timeout.rounded(.up)), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var line = try JSONSerialization.data(withJSONObject: request)
        line.append(0x0A)
        let sent = line.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == line.count else { throw TestSetupError("cannot send to \(socketPath): \(String(cString: strerror(errno)))") }
        var buffer: [UInt8] = []
        var lines: [String] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { throw TestSetupError("cardd closed the connection or did not answer (\(count)): got \(lines)") }
            buffer += chunk[0..<count]
            while let newline = buffer.firstIndex(of: 0x0A) {
                let data = Data(buffer[..<newline])
                buffer.removeSubrange(...newline)
                guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else { continue }
                lines.append(String(decoding: data, as: UTF8.self))
                if object["ok"] != nil || object["error"] != nil { return lines }
            }
        }
    }

    /// A `charge` on the socket: waits for the sale's end. Call it from a detached task, then present the card.
    public func charge(amount: String, saleID: String, timeout: Int = 30) throws -> SaleResult {
        let lines = try controlLines(["command": "charge", "amount": amount, "saleID": saleID, "timeoutSeconds": timeout], timeout: TimeInterval(timeout + 10))
        let objects = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let refusal = objects.first { $0["event"] as? String == "sale-refused" }
        return SaleResult(result: objects.last?["result"] as? String,
                          refusalMessage: (refusal?["reason"] as? [String: Any])?["message"] as? String, lines: lines)
    }

    /// `status` as a dictionary.
    public func status() throws -> [String: Any] {
        guard let last = try control(["command": "status"], timeout: 10).last else { throw TestSetupError("no status") }
        return last
    }

    /// Arms a sale and returns once it is armed (`arm`: the result comes as events).
    public func arm(amount: String, saleID: String, timeout: Int = 60) throws {
        let answer = try control(["command": "arm", "amount": amount, "saleID": saleID, "timeoutSeconds": timeout])
        guard let last = answer.last, last["ok"] as? Bool == true else { throw TestSetupError("arm refused: \(answer)") }
    }

    /// Every entry of the store, by sequence (`cardctl journal export --format csv`); `path`: a store the config moved
    /// elsewhere.
    public func storedEntries(path: String? = nil) throws -> [StoredEntry] {
        let result = try cardctl(["journal", "export", "--format", "csv", "--journal", path ?? storePath])
        try Self.check(result)
        let rows = result.stdout.split(whereSeparator: \.isNewline).map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        guard let header = rows.first else { return [] }
        func column(_ name: String) throws -> Int {
            guard let index = header.firstIndex(of: name) else { throw TestSetupError("no column \(name) in \(header)") }
            return index
        }
        let (sequence, kind, uid, amount, before, outcome, balance, after) = (try column("sequence"), try column("kind"), try column("card_uid"),
            try column("amount_fen"), try column("counter_before"), try column("outcome"), try column("balance_after_fen"), try column("counter_after"))
        return rows.dropFirst().map { row in
            StoredEntry(sequence: UInt32(row[sequence]) ?? 0, kind: row[kind], cardUID: row[uid], amountFen: Int(row[amount]) ?? 0,
                        counterBefore: Int(row[before]) ?? -1, outcome: row[outcome], balanceAfterFen: Int(row[balance]),
                        counterAfter: Int(row[after]))
        }
    }

    /// The card as the card office reads it (`cardctl card show --json` with the office keystore and journal). The card
    /// must be on the reader.
    public func cardReport() throws -> CardReport {
        let result = try cardctl(["card", "show", "--json", "--keystore", officeKeystore, "--journal", work + "/office-journal.jsonl",
                                  "--terminal-id", "1"])
        try Self.check(result)
        guard let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
              let balance = object["balanceFen"] as? Int, let counter = object["counter"] as? Int else {
            throw TestSetupError("card show: \(result.stdout)")
        }
        return CardReport(balanceFen: balance, counter: counter, resolution: object["resolution"] as? String ?? "?",
                          mac: object["mac"] as? String ?? "?", status: object["status"] as? String ?? "?")
    }

    /// Waits until cardd's status satisfies `condition` (polling its socket); returns the last status.
    @discardableResult
    public func waitForStatus(timeout: TimeInterval = 15, _ condition: ([String: Any]) -> Bool) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            if let status = try? status() {
                last = status
                if condition(status) { return status }
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestSetupError("cardd's status did not come to the expected state within \(Int(timeout)) s: \(last); cardd's log: \(log.suffix(4000))")
    }

    /// The number of card taps cardd saw since it started (`status.taps`).
    public func taps() throws -> Int { try status()["taps"] as? Int ?? -1 }
}
