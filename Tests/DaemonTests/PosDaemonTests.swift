import Foundation
import Testing
import TestSupport

/// cardd in pos mode through the real pcscd, the emulator and the control socket (issue 10, items 3 and 6).
@Suite(.serialized) struct PosDaemonTests {
    /// A sale armed with `cardctl pos charge` is paid by the next card tap, once: the card left on the reader is not
    /// charged again, and the store holds the done record, queued for upload.
    @Test func aChargeIsPaidByTheNextTapOnce() throws {
        let box = try DaemonHarness()
        defer { box.cleanUp() }
        try box.start()
        try box.card(present: false)
        let charge = Task.detached { try box.daemonCommand(["pos", "charge", "12.50", "--sale-id", "s-1", "--timeout", "20"]) }
        Thread.sleep(forTimeInterval: 1)
        try box.card(present: true)
        let result = try awaitResult(charge)
        #expect(result.status == 0, "\(result.stderr) \(box.log)")
        #expect(result.stdout.contains("paid 12.50 yuan") && result.stdout.contains("balance 87.50 yuan"))
        // A second sale while the same card stays on the reader: not charged; it times out.
        let again = try box.daemonCommand(["pos", "charge", "1.00", "--timeout", "2"])
        #expect(again.status == 3 && again.stderr.contains("timed out"), Comment(rawValue: again.stderr))
        let list = try box.cardctl(["journal", "list", "--journal", box.storePath])
        #expect(list.stdout.components(separatedBy: "purse-debit").count == 2, Comment(rawValue: list.stdout))
        #expect(list.stdout.contains("queued"))
        let status = try box.daemonCommand(["daemon", "status", "--json"])
        #expect(status.stdout.contains("\"unacknowledged\":1") && status.stdout.contains("\"mode\":\"pos\""), Comment(rawValue: status.stdout))
        #expect(box.stop() == 0)
    }
}

/// Waits for a detached task's result from synchronous test code.
func awaitResult<T: Sendable>(_ task: Task<T, any Error>, timeout: TimeInterval = 60) throws -> T {
    let box = ResultBox<T>()
    let semaphore = DispatchSemaphore(value: 0)
    Task {
        box.result = await task.result
        semaphore.signal()
    }
    guard semaphore.wait(timeout: .now() + timeout) == .success, let result = box.result else {
        throw CancellationError()
    }
    return try result.get()
}

final class ResultBox<T: Sendable>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
