import CampusCard
import Foundation
import TerminalStore

/// A fresh directory under the temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "terminal-store-\(UUID().uuidString.prefix(12))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    var store: String { path + "/terminal.sqlite" }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

func intent(_ sequence: UInt32, uid: String = "01020304", kind: TransactionIntent.Kind = .purseDebit, amount: Fen = 350,
            createdAt: Date = Date(timeIntervalSinceReferenceDate: 800_000_000.123456)) -> TransactionIntent {
    TransactionIntent(terminalID: 7, terminalSequence: sequence, kind: kind, cardUID: uid, cardSerial: kind == .purseDebit ? nil : 42,
                      amount: amount, balanceBefore: 10_000, counterBefore: 5, consumption: kind == .waterSettle ? 120 : nil,
                      referenceBefore: kind.rawValue.hasPrefix("water") ? 9 : nil, settlementReference: kind == .waterSettle ? 10 : nil,
                      recordBefore: [UInt8](0..<16), createdAt: createdAt)
}

/// Whether `body` throws a `TerminalStoreError` with `code`.
func throwsStoreError(_ code: TerminalStoreError.Code, _ body: () throws -> Void) -> Bool {
    do {
        try body()
        return false
    } catch let error as TerminalStoreError {
        return error.code == code
    } catch {
        return false
    }
}

/// The error `body` throws, if any.
func storeError(_ body: () throws -> Void) -> TerminalStoreError? {
    do {
        try body()
        return nil
    } catch {
        return error as? TerminalStoreError
    }
}

/// A clock the tests move by hand.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    init(_ start: Date = Date(timeIntervalSinceReferenceDate: 800_000_000)) { current = start }
    var now: Date { lock.withLock { current } }
    func advance(_ seconds: TimeInterval) { lock.withLock { current += seconds } }
}
