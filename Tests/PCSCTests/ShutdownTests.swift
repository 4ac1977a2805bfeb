import CardEmulator
import Foundation
@testable import PCSC
import Testing
import TestSupport

/// Ending contexts (issue 8: cardctl crashed at exit while a thread was still inside libpcsclite). In the serialized
/// PCSCStackTests suite: `shutdownAll()` ends every context of the process.
extension PCSCStackTests {
    @Test func shutdownReleasesAndJoinsTheThread() async throws {
        try PCSCDaemon.ensureRunning()
        let context = try await PCSCContext.establish()
        _ = try await context.listReaders()
        #expect(!context.threadHasEnded)
        await context.shutdown()
        // The thread has released the context and ended: no call of ours can be inside libpcsclite.
        #expect(context.threadHasEnded)
        #expect(context.worker.isJoined)
        #expect(!context.isValid)
        // Later calls fail at once instead of queueing on a thread that is gone.
        await #expect(throws: PCSCError.invalidHandle) { _ = try await context.listReaders() }
        await context.shutdown()  // idempotent
    }

    @Test func shutdownEndsABlockingWait() async throws {
        try PCSCDaemon.ensureRunning()
        let context = try await PCSCContext.establish()
        var states = try await context.readerStates()
        for _ in 0..<20 {
            do { states = try await context.waitForChanges(states, timeout: .milliseconds(300)) } catch PCSCError.timeout { break }
        }
        let waiting = Task { [states] in try await context.waitForChanges(states) }
        try await Task.sleep(for: .milliseconds(200))
        let start = ContinuousClock.now
        await context.shutdown()
        #expect(context.threadHasEnded)
        await #expect(throws: (any Error).self) { _ = try await waiting.value }
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func cardsAndContextsDroppedElsewhereAreReleasedOnTheirThread() async throws {
        let virtual = try VirtualCard(image: SampleCards.blank1K(uid: [0x0A, 0x0B, 0x0C, 0x0D]), port: Self.port)
        defer { virtual.stop() }
        var context: PCSCContext? = try await PCSCContext.establish()
        var card: PCSCCard? = try await context!.connect(reader: Self.readerName)
        let worker = try #require(context?.worker)
        #expect(try await card!.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]).suffix(2) == [0x90, 0x00])
        // The last references go on a thread of their own: the card's SCardDisconnect and the context's
        // SCardReleaseContext are queued to the context's thread, which then ends by itself.
        let references = References(context: context, card: card)
        context = nil
        card = nil
        let dropped = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            references.drop()
            dropped.signal()
        }
        dropped.wait()
        for _ in 0..<100 where !worker.hasEnded { try await Task.sleep(for: .milliseconds(20)) }
        #expect(worker.hasEnded)
        // The reader is free again: the disconnect happened (an exclusive connect would fail otherwise).
        let other = try await PCSCContext.establish()
        let exclusive = try await other.connect(reader: Self.readerName, waitingUpTo: .seconds(2), share: .exclusive)
        try await exclusive.disconnect()
        await other.shutdown()
    }

    /// What a program does before it exits: afterwards no context thread exists, whatever was still running or
    /// still referenced, and no new context can start.
    @Test func shutdownAllEndsEveryContextThread() async throws {
        let virtual = try VirtualCard(image: SampleCards.blank1K(), port: Self.port)
        defer { virtual.stop() }
        defer { ContextThreads.shared.reopen() }
        // A context blocked in SCardGetStatusChange (a `watch`), one busy with APDUs, one with a card still held.
        let watching = try await PCSCContext.establish()
        let states = try await watching.readerStates()
        let wait = Task { try await watching.waitForChanges(states + [ReaderState(name: ReaderState.plugAndPlay)]) }
        let busy = try await PCSCContext.establish()
        let busyCard = try await busy.connect(reader: Self.readerName)
        let apdus = Task {
            while true { _ = try await busyCard.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]) }
        }
        let holding = try await PCSCContext.establish()
        let heldCard = try await holding.connect(reader: Self.readerName)
        try await Task.sleep(for: .milliseconds(100))
        #expect(PCSCContext.threadCount >= 3)

        PCSCContext.shutdownAll()

        #expect(PCSCContext.threadCount == 0)
        #expect(watching.threadHasEnded && busy.threadHasEnded && holding.threadHasEnded)
        await #expect(throws: (any Error).self) { _ = try await wait.value }
        await #expect(throws: PCSCError.invalidHandle) { _ = try await apdus.value }
        await #expect(throws: PCSCError.invalidHandle) { _ = try await heldCard.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]) }
        await #expect(throws: PCSCError.noService) { _ = try await PCSCContext.establish() }
        #expect(PCSCContext.threadCount == 0)
    }
}

private final class References: @unchecked Sendable {
    private var context: PCSCContext?
    private var card: PCSCCard?
    init(context: PCSCContext?, card: PCSCCard?) {
        self.context = context
        self.card = card
    }
    func drop() {
        card = nil
        context = nil
    }
}
