import CampusCard
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Inputs the card or the box cannot hold are refused, not stored as something else or waited on forever.
@Suite struct InputRangeTests {
    /// A card day is a u16 of days since 2000-01-01 (UTC+8): 2179-06-06 is the last; later dates are not days
    /// (`card issue --expires 2199-12-31` once stored 2179-06-06).
    @Test func cardDaysEndOn2179_06_06() throws {
        func date(_ text: String) throws -> Date {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withFullDate]
            formatter.timeZone = TimeZone(secondsFromGMT: 8 * 3600)
            return try #require(formatter.date(from: text))
        }
        #expect(CardDay.last.description == "2179-06-06")
        #expect(CardDay(exactly: try date("2179-06-06")) == .last)
        #expect(CardDay(exactly: try date("2179-06-07")) == nil)
        #expect(CardDay(exactly: try date("2199-12-31")) == nil)
        #expect(CardDay(exactly: try date("1999-12-31")) == nil)
        #expect(CardDay(exactly: try date("2000-01-01")) == .first)
        #expect(CardDay(exactly: try date("2026-11-22"))?.description == "2026-11-22")
    }

    /// A keystore path that is a FIFO is refused at once (it was opened before the regular-file check, and opening a
    /// FIFO for reading waits for a writer: forever).
    @Test(.timeLimit(.minutes(1))) func aFIFOKeystoreIsRefusedWithoutBlocking() throws {
        let path = NSTemporaryDirectory() + "ks-fifo-\(UUID().uuidString)"
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        let result = Outcome()
        let finished = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            do { _ = try FileKeystore(path: path); result.set("loaded") } catch let error as KeystoreError {
                result.set("\(error.code.rawValue): \(error.message)")
            } catch { result.set("\(error)") }
            finished.signal()
        }
        let returned = finished.wait(timeout: .now() + 2) == .success
        if !returned {
            // Release the blocked open (a writer arrives and leaves) so the test process is not left with a stuck thread.
            let writer = open(path, O_WRONLY | O_NONBLOCK)
            if writer >= 0 { close(writer) }
            _ = finished.wait(timeout: .now() + 5)
        }
        #expect(returned, "opening the keystore blocked on the FIFO")
        #expect(result.value?.hasPrefix("unreadable") == true && result.value?.contains("not a regular file") == true, "\(result.value ?? "nothing")")
    }
}

/// A value set on one thread and read on another.
private final class Outcome: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: String?
    func set(_ value: String) { lock.withLock { stored = value } }
    var value: String? { lock.withLock { stored } }
}
