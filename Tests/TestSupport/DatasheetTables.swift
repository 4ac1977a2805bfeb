import MifareClassic

/// The NXP MF1S50 access-condition tables transcribed as printed, independently of `AccessBits`, so tests of the
/// model and of the emulator compare against the datasheet and not against the code under test.
public enum Datasheet {
    /// Table 8 (rows C1 C2 C3: read, write, increment, decrement/transfer/restore).
    public static let dataTable = """
    000 A|B A|B A|B A|B
    010 A|B never never never
    100 A|B B never never
    110 A|B B B A|B
    001 A|B never never A|B
    011 B B never never
    101 B never never never
    111 never never never never
    """

    /// Table 7 (rows C1 C2 C3: key A read/write, access bits read/write, key B read/write).
    public static let trailerTable = """
    000 never A A never A A
    010 never never A never A never
    100 never B A|B never never B
    110 never never A|B never never never
    001 never A A A A A
    011 never B A|B B never B
    101 never never A|B B never never
    111 never never A|B never never never
    """

    public static func permission(_ word: Substring) -> KeyPermission {
        switch word {
        case "A|B": return .either
        case "A": return .keyA
        case "B": return .keyB
        default: return .never
        }
    }

    public static func condition(_ bits: Substring) -> AccessCondition {
        let b = Array(bits)
        return AccessCondition(c1: b[0] == "1", c2: b[1] == "1", c3: b[2] == "1")
    }

    /// Data table rows: the condition and who may read, write, increment, decrement/transfer/restore.
    public static var dataRows: [(condition: AccessCondition, permissions: [KeyPermission])] {
        dataTable.split(separator: "\n").map { line in
            let words = line.split(separator: " ")
            return (condition(words[0]), words[1...].map(permission))
        }
    }

    /// Trailer table rows.
    public static var trailerRows: [(condition: AccessCondition, permissions: [KeyPermission])] {
        trailerTable.split(separator: "\n").map { line in
            let words = line.split(separator: " ")
            return (condition(words[0]), words[1...].map(permission))
        }
    }
}

import Foundation

/// A tiny lock wrapper for test bookkeeping classes.
public final class TestLock: @unchecked Sendable {
    private let lock = NSLock()
    public init() {}
    public func run<T>(_ body: () throws -> T) rethrows -> T { try lock.withLock(body) }
}
