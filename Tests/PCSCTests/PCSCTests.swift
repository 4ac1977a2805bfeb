import CardEmulator
import Foundation
@testable import PCSC
import SmartCard
import Testing
import TestSupport

@Suite struct PCSCErrorTests {
    @Test func everyCodeHasADistinctNameAndASentence() {
        let all = PCSCError.allKnown
        #expect(all.count == 59, "pcsc-lite 1.9.9 defines 59 codes besides success")
        #expect(Set(all.map(\.name)).count == all.count)
        for error in all {
            #expect(error.name.hasPrefix("SCARD_"))
            #expect(error.explanation.count >= 9, "\(error.name)")
            #expect(PCSCError(rawValue: error.rawValue) == error)
        }
        #expect(PCSCError(rawValue: 0x1234).name == "SCARD_0x1234")
    }

    @Test func transportFailures() {
        #expect(PCSCError.removedCard.transportFailure == .cardRemoved)
        #expect(PCSCError.notTransacted.transportFailure == .cardRemoved)
        #expect(PCSCError.noService.transportFailure == .serviceUnavailable)
        #expect(PCSCError.sharingViolation.transportFailure == .readerBusy)
        #expect(PCSCError.readerUnavailable.transportFailure == .readerUnavailable)
        #expect(PCSCError.noService.description.contains("SCARD_E_NO_SERVICE"))
    }

    /// `PCSCError`'s `~=` lets `catch PCSCError.x` match that code only: not another code, not another error type.
    @Test func catchMatchesOnlyThatCode() {
        func caught(_ error: any Error) -> String {
            do { throw error } catch PCSCError.noSmartcard { return "no-smartcard" } catch PCSCError.noService { return "no-service" } catch { return "other" }
        }
        #expect(caught(PCSCError.noSmartcard) == "no-smartcard")
        #expect(caught(PCSCError.noService) == "no-service")
        #expect(caught(PCSCError.removedCard) == "other")
        #expect(caught(CocoaError(.fileNoSuchFile)) == "other")
        #expect(PCSCError.noSmartcard ~= PCSCError.noSmartcard as any Error)
        #expect(!(PCSCError.noSmartcard ~= PCSCError(rawValue: PCSCError.noSmartcard.rawValue + 1) as any Error))
    }
}

/// Through the real pcscd and vpcd, on "Virtual PCD 00 01" (port 35964; IntegrationTests use 35963).
@Suite(.serialized) struct PCSCStackTests {
    static let port: UInt16 = 35964
    static let readerName = "Virtual PCD 00 01"

    @Test func listsTheVirtualReaders() async throws {
        try PCSCDaemon.ensureRunning()
        let context = try await PCSCContext.establish()
        let readers = try await context.listReaders()
        #expect(readers.contains("Virtual PCD 00 00"))
        #expect(readers.contains(Self.readerName))
    }

    @Test func noCardIsATypedError() async throws {
        try PCSCDaemon.ensureRunning()
        let context = try await PCSCContext.establish()
        await #expect(throws: PCSCError.self) {
            _ = try await context.connect(reader: Self.readerName)
        }
        do {
            _ = try await context.connect(reader: Self.readerName)
        } catch let error as PCSCError {
            #expect(error.transportFailure == .cardRemoved, "\(error.name)")
        }
        await #expect(throws: PCSCError.unknownReader) { _ = try await context.connect(reader: "No Such Reader 00 00") }
    }

    @Test func transmitThroughPcscd() async throws {
        let card = try VirtualCard(image: SampleCards.blank1K(uid: [0x01, 0x02, 0x03, 0x04]), port: Self.port)
        defer { card.stop() }
        let context = try await PCSCContext.establish()
        let connection = try await context.connect(reader: Self.readerName)
        #expect(ATR(bytes: connection.atr).cardName == .mifareClassic1K)
        #expect(try await connection.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]) == [0x01, 0x02, 0x03, 0x04, 0x90, 0x00])
        let many = try await connection.perform { channel in
            try (0..<50).map { _ in try channel.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]) }
        }
        #expect(many.allSatisfy { $0 == [0x01, 0x02, 0x03, 0x04, 0x90, 0x00] })
        let states = try await context.readerStates()
        #expect(states.first { $0.name == Self.readerName }?.cardPresent == true)
        try await connection.disconnect()
    }

    @Test func exclusiveHolderBlocksOthers() async throws {
        let card = try VirtualCard(image: SampleCards.blank1K(), port: Self.port)
        defer { card.stop() }
        let first = try await PCSCContext.establish()
        let holder = try await first.connect(reader: Self.readerName, share: .exclusive)
        let second = try await PCSCContext.establish()
        await #expect(throws: PCSCError.sharingViolation) { _ = try await second.connect(reader: Self.readerName) }
        try await holder.disconnect()
        let later = try await second.connect(reader: Self.readerName, waitingUpTo: .seconds(2))
        try await later.disconnect()
    }

    static func eventCount(_ context: PCSCContext) async throws -> Int? {
        try await context.readerStates().first { $0.name == readerName }?.eventCount
    }

    @Test func cardRemovedMidAPDU() async throws {
        let card = try VirtualCard(image: SampleCards.blank1K(), port: Self.port)
        defer { card.stop() }
        let context = try await PCSCContext.establish()
        let connection = try await context.connect(reader: Self.readerName)
        let eventsBefore = try await Self.eventCount(context)
        card.reader.arm(.after(0))  // the next APDU never gets its answer
        do {
            let response = try await connection.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00])
            Issue.record("a transmit to a card that left should fail; got \(response), apdus \(card.reader.statistics.apdus)")
        } catch let error as PCSCError {
            #expect(error.transportFailure == .cardRemoved, "got \(error.name)")
        }
        // The card comes back with its memory; a new connection works. pcscd's event thread must first have seen it
        // leave (it polls vpcd every 400 ms): a card put back before that is, to pcscd, still the old powered card,
        // and no arrival is ever reported (HardwareNotes, "A vpcd card taken off and put back within about a second").
        // Neither a refused SCardConnect nor an empty reader state shows that: the failed power-down after the torn
        // APDU marks the reader empty at once. The reader's event counter moves only when the event thread saw it.
        try card.waitForPcscd(present: false)
        let deadline = ContinuousClock.now + .seconds(15)
        while try await Self.eventCount(context) == eventsBefore, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(card.reader.reinsert())
        #expect(card.link.waitUntilConnected())
        try card.waitForPcscd(present: true)
        let again = try await context.connect(reader: Self.readerName)
        #expect(try await again.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]).suffix(2) == [0x90, 0x00])
    }

    @Test func waitIsCancelledPromptly() async throws {
        try PCSCDaemon.ensureRunning()
        let context = try await PCSCContext.establish()
        // Settle: wait until nothing is pending, so the next wait would block for good.
        var states = try await context.readerStates()
        for _ in 0..<20 {
            do { states = try await context.waitForChanges(states, timeout: .milliseconds(300)) } catch PCSCError.timeout { break }
        }
        let start = ContinuousClock.now
        let task = Task { [states] in try await context.waitForChanges(states) }
        try await Task.sleep(for: .milliseconds(200))
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        // A correctness bound (the wait would otherwise last forever), not a speed claim.
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    /// Kills pcscd: only the tests' own (see `PCSCDaemon.mayRestart`), else skipped with the reason.
    @Test(.enabled(if: PCSCDaemon.mayRestart(), Comment(rawValue: PCSCDaemon.notOursReason)))
    func monitorSeesCardsAndSurvivesPcscdRestart() async throws {
        try PCSCDaemon.ensureRunning()
        let events = EventLog()
        let task = Task {
            do {
                for try await event in ReaderMonitor(initialBackoff: .milliseconds(50)).events() { events.append(event) }
            } catch {
                events.ended(with: error)
            }
        }
        defer { task.cancel() }
        try await events.wait { $0.contains(.readerAdded(Self.readerName)) }
        let card = try VirtualCard(image: SampleCards.blank1K(), port: Self.port)
        try await events.wait { $0.contains { $0.kind == "card-inserted" && $0.reader == Self.readerName } }
        card.reader.remove()
        try await events.wait { $0.contains(.cardRemoved(reader: Self.readerName)) }

        try PCSCDaemon.kill()
        try await events.wait { $0.contains(.serviceLost) }
        try PCSCDaemon.ensureRunning()
        try await events.wait { $0.contains(.serviceRestored) }
        card.reader.reinsert()
        try await events.wait { $0.filter { $0.kind == "card-inserted" && $0.reader == Self.readerName }.count >= 2 }
        card.stop()
        task.cancel()
        _ = await task.value
    }
}

final class EventLog: @unchecked Sendable {
    private let lock = TestLock()
    private var list: [ReaderEvent] = []
    private var endError: (any Error)?
    func append(_ event: ReaderEvent) { lock.run { list.append(event) } }
    /// The monitor's stream ended with an error (it should not: a monitor retries).
    func ended(with error: any Error) { lock.run { endError = error } }
    var events: [ReaderEvent] { lock.run { list } }

    /// Polls until `condition` holds, failing after 10 s.
    func wait(_ condition: ([ReaderEvent]) -> Bool, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        for _ in 0..<200 {
            if condition(events) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        let ended = lock.run { endError.map { "; the monitor ended with \($0)" } ?? "" }
        Issue.record("timed out waiting; events so far: \(events)\(ended)", sourceLocation: sourceLocation)
        throw CancellationError()
    }
}
