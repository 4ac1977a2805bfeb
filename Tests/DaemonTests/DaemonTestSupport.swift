import DaemonSupport
import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A client following `events` on its own thread, collecting every event line.
final class EventWatcher: @unchecked Sendable {
    private let client: ControlSocketClient
    private let lock = NSLock()
    private var lines: [[String: Any]] = []
    private var ended = false

    init(_ box: DaemonHarness) throws {
        client = try ControlSocketClient(path: box.socketPath)
        try client.send(rawLine: #"{"command":"events"}"#)
        // The acknowledgement arrives once the subscription is in place: from then on no event is missed.
        guard let first = try client.readLine(timeout: .seconds(10)),
              let ack = try? JSONSerialization.jsonObject(with: first) as? [String: Any], ack["ok"] as? Bool == true else {
            throw TestSetupError("events: no acknowledgement")
        }
        let thread = Thread { [self] in
            while true {
                guard let data = try? client.readLine(timeout: .seconds(600)) else { break }
                guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { continue }
                append(object)
            }
            finish()
        }
        thread.start()
    }

    private func append(_ line: [String: Any]) { lock.withLock { lines.append(line) } }
    private func finish() { lock.withLock { ended = true } }

    /// Every event seen so far.
    var events: [[String: Any]] { lock.withLock { lines } }
    /// The event names seen so far, in order.
    var names: [String] { events.compactMap { $0["event"] as? String } }
    /// Whether the daemon closed the stream.
    var isEnded: Bool { lock.withLock { ended } }

    /// Waits for the first event named `name` (after `index` events) that matches `predicate`.
    @discardableResult
    func wait(for name: String, after index: Int = 0, timeout: TimeInterval = 15,
              where predicate: ([String: Any]) -> Bool = { _ in true }) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let hit = events.dropFirst(index).first(where: { $0["event"] as? String == name && predicate($0) }) { return hit }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TestSetupError("no \(name) event within \(timeout) s; seen: \(names); last: \(events.suffix(2))")
    }

    func close() { client.close() }
}

/// A blocking call run on a thread of its own (cardctl waiting for a card), its result collected later.
final class Background<T>: @unchecked Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private var result: Result<T, any Error>?

    init(_ body: @escaping @Sendable () throws -> T) {
        let thread = Thread { [self] in
            result = Result { try body() }
            semaphore.signal()
        }
        thread.start()
    }

    /// The result if the call ended within `timeout`, else nil; can be asked again.
    func poll(timeout: TimeInterval) -> Result<T, any Error>? {
        guard semaphore.wait(timeout: .now() + timeout) == .success else { return nil }
        semaphore.signal()
        return result
    }

    func value(timeout: TimeInterval = 60) throws -> T {
        guard semaphore.wait(timeout: .now() + timeout) == .success, let result else { throw TestSetupError("no result within \(timeout) s") }
        return try result.get()
    }
}

/// cardd run directly (no harness start): its exit status and output.
func runCardd(_ arguments: [String], environment: [String: String]? = nil, timeout: TimeInterval = 30) throws -> (status: Int32, stdout: String, stderr: String) {
    if let environment {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try BuiltExecutable.path("cardd"))
        process.arguments = arguments
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }
    return run(try BuiltExecutable.path("cardd"), arguments, timeout: timeout)
}

extension DaemonHarness {
    /// Starts `cardctl pos charge AMOUNT --sale-id SALE ...` in the background and waits until the sale is armed.
    func charge(_ amount: String, sale: String, timeout: Int = 20, watcher: EventWatcher, extra: [String] = []) throws -> Background<(status: Int32, stdout: String, stderr: String)> {
        let seen = watcher.events.count
        let charge = Background { [self] in
            try daemonCommand(["pos", "charge", amount, "--sale-id", sale, "--timeout", "\(timeout)"] + extra)
        }
        try watcher.wait(for: "sale-armed", after: seen) { $0["saleID"] as? String == sale }
        return charge
    }

    /// Waits until cardd finished a tap (the start-up card's, for one).
    func waitForLastTap(timeout: TimeInterval = 15) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try status()["lastTap"] != nil { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestSetupError("no tap ended within \(timeout) s: \(log)")
    }

    /// Takes the card off, then puts it back (a new tap).
    func retap() throws {
        try takeCard()
        try cardBack()
    }

    /// Takes the card off the reader and waits until cardd saw it leave. (`card(present:)` asks pcscd through a
    /// second PC/SC client that connects to the card, which resets it under cardd's session: these helpers only
    /// ask cardd.)
    func takeCard() throws {
        try checked(emulator.ctl("remove"))
        try waitForCard(nil)
    }

    /// Puts the card back after it was taken off and waits until cardd read it. pcscd polls the reader, so a card
    /// away for less than a poll period is not seen to leave and come back (CardStackTests waits the same way).
    func cardBack() throws {
        Thread.sleep(forTimeInterval: 1)
        try checked(emulator.ctl("insert"))
        try waitForCard(cardUID)
    }

    /// Waits until cardd's status shows `uid` on the reader (nil: none).
    func waitForCard(_ uid: String?, timeout: TimeInterval = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try status()["card"] as? String == uid { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestSetupError("cardd did not see the card \(uid == nil ? "leave" : "arrive") within \(timeout) s: \(log)")
    }
}

/// The card moved on and off the reader with cardd's status as the witness (never a second PC/SC client, which would
/// connect to the card and reset it under cardd's session). pcscd polls vpcd (about every 400 ms): a card off the
/// reader for less than a poll is never seen to leave, so `put` waits until it has been off for 1 s.
final class CardHand: @unchecked Sendable {
    let box: DaemonHarness
    private var awaySince = Date.distantPast

    init(_ box: DaemonHarness) { self.box = box }

    /// Puts the card on the reader (no wait for cardd: a tear may keep it from reading the card).
    func put() throws {
        let rest = 1.0 - Date().timeIntervalSince(awaySince)
        if rest > 0 { Thread.sleep(forTimeInterval: rest) }
        try checked(box.emulator.ctl("insert"))
    }

    /// Puts the card on the reader and waits until cardd read it.
    func putAndWait(timeout: TimeInterval = 10) throws {
        try put()
        try box.waitForCard(box.cardUID, timeout: timeout)
    }

    /// Takes the card off (it may be gone already: a tear) and waits until cardd no longer has it on record.
    func take() throws {
        _ = try box.emulator.ctl("remove")
        try box.waitForCard(nil)
        awaySince = Date()
    }

    /// Disarms a tear the sale did not reach (a later one replaces it).
    func disarmTear() throws {
        try checked(box.emulator.ctl("tear-after", "1000000"))
    }
}

func checked(_ result: (status: Int32, stdout: String, stderr: String)) throws {
    guard result.status == 0 else { throw TestSetupError("failed (\(result.status)): \(result.stderr)\(result.stdout)") }
}
