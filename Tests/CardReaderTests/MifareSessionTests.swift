import CardEmulator
import CardReader
import MifareClassic
import SmartCard
import Testing
import TestSupport

/// `MifareSession` against the in-process emulator of each reader profile.
@Suite struct MifareSessionTests {
    func session(_ kind: ReaderKind) throws -> (MifareSession, EmulatedReader) {
        let reader = EmulatedReader(kind: kind, card: try EmulatedCard(image: SampleCards.sample1K()))
        return (MifareSession(channel: EmulatedChannel(reader: reader), profile: .profile(for: kind)), reader)
    }

    @Test func authenticatesOncePerSectorAndReusesKeySlots() throws {
        let (session, _) = try session(.acr122u)
        #expect(try session.uid() == [0xDE, 0xAD, 0xBE, 0xEF])
        try session.authenticate(sector: 1, keyType: .a, key: SampleCards.sector1KeyA)
        try session.authenticate(sector: 1, keyType: .a, key: SampleCards.sector1KeyA)
        #expect(try session.read(block: 4) == Array("Hello, campus!  ".utf8))
        #expect(session.apduCount == 4, "UID, LOAD, AUTH, READ: the second authenticate sent nothing")
        try session.authenticate(sector: 2, keyType: .a, key: .transport)
        try session.authenticate(sector: 1, keyType: .a, key: SampleCards.sector1KeyA)
        #expect(session.apduCount == 7, "two keys fit the ACR122U's two slots: no second LOAD KEYS for sector 1")
    }

    /// The ACR1252U reads a sector's three data blocks in one APDU (Multiple Blocks Mode); the ACR122U needs three.
    @Test(arguments: [(ReaderKind.acr122u, 3), (.acr1252u, 1), (.omnikey5422, 3)])
    func readsConsecutiveBlocksInAsFewAPDUsAsTheProfileAllows(kind: ReaderKind, apdus: Int) throws {
        let (session, _) = try session(kind)
        try session.authenticate(sector: 1, keyType: .a, key: SampleCards.sector1KeyA)
        let before = session.apduCount
        let blocks = try session.read(blocks: [4, 5, 6])
        #expect(session.apduCount - before == apdus)
        #expect(try blocks == [4, 5, 6].map { try session.read(block: $0) })
        // A range reaching the trailer is never read in one APDU.
        let withTrailer = session.apduCount
        #expect(try session.read(blocks: [6, 7]).count == 2 && session.apduCount - withTrailer == 2)
    }

    /// A reader chosen as an ACR1252U that refuses Multiple Blocks Mode (here: ACR122U firmware, which reads 16 bytes
    /// at most): the session falls back to one block per APDU, authenticating again, and stays there.
    @Test func aRefusedMultiBlockReadFallsBackToSingleBlocks() throws {
        let reader = EmulatedReader(kind: .acr122u, card: try EmulatedCard(image: SampleCards.sample1K()))
        let session = MifareSession(channel: EmulatedChannel(reader: reader), profile: .acr1252u)
        try session.authenticate(sector: 1, keyType: .a, key: SampleCards.sector1KeyA)
        let before = session.apduCount
        #expect(try session.read(blocks: [4, 5, 6])[0] == Array("Hello, campus!  ".utf8))
        #expect(session.apduCount - before == 5, "the refused read, AUTHENTICATE (key still in its slot), 3 reads")
        let again = session.apduCount
        _ = try session.read(blocks: [4, 5, 6])
        #expect(session.apduCount - again == 3)
    }

    @Test(arguments: [ReaderKind.acr122u, .acr1252u, .omnikey5422])
    func nativeValueOperations(kind: ReaderKind) throws {
        let (session, reader) = try session(kind)
        try session.authenticate(sector: 1, keyType: .a, key: SampleCards.sector1KeyA)
        #expect(try session.readValue(block: 5) == 1000)
        try session.decrement(block: 5, by: 250)
        #expect(try session.readValue(block: 5) == 750)
        #expect(throws: MifareError.self) { try session.increment(block: 5, by: 1) }  // key A may not increment (110)
        // The refusal halted the card: select it again, as a terminal must.
        try EmulatedChannel(reader: reader).reselect()
        session.forgetAuthentication()
        try session.authenticate(sector: 1, keyType: .b, key: SampleCards.sector1KeyB)
        try session.increment(block: 5, by: 50)
        #expect(try session.readValue(block: 5) == 800)
        if session.canCopyValue {
            try session.copyValue(from: 5, to: 6)
            #expect(try ValueBlock(block: Array(reader.currentCard!.memory[96..<112])).value == 800)
        } else {
            #expect(throws: MifareError.self) { try session.copyValue(from: 5, to: 6) }
        }
    }

    @Test func genericReaderRefusesValueOperationsBeforeSending() throws {
        let (session, _) = try session(.generic)
        try session.authenticate(sector: 1, keyType: .a, key: SampleCards.sector1KeyA)
        let before = session.apduCount
        do {
            try session.decrement(block: 5, by: 1)
            Issue.record("a generic reader has no decrement")
        } catch let error as MifareError {
            #expect(error.code == .unsupportedByReader)
        }
        #expect(session.apduCount == before)
        #expect(try session.readValue(block: 5) == 1000, "read + decode works everywhere")
    }

    @Test func typedRefusals() throws {
        let (session, _) = try session(.omnikey5422)
        let refusal = #expect(throws: MifareError.self) { _ = try session.read(block: 4) }
        #expect(refusal?.code == .notAuthenticated)
        let wrongKey = #expect(throws: MifareError.self, "sector 1 does not open with the transport key") {
            try session.authenticate(sector: 1, keyType: .a, key: .transport)
        }
        #expect(wrongKey?.code == .authenticationFailed && wrongKey?.statusWord == StatusWord(rawValue: 0x6983))
        #expect(wrongKey.map { !$0.description.contains("FFFFFFFFFFFF") } == true, "keys never in messages")
        #expect(throws: MifareError.self) { try session.authenticate(sector: 16, keyType: .a, key: .transport) }
    }

    @Test func cardRemovedIsATransportError() throws {
        let (session, reader) = try session(.acr122u)
        reader.arm(.after(1))
        _ = try session.uid()
        do {
            _ = try session.uid()
            Issue.record("the card left")
        } catch let error as any TransportError {
            #expect(error.transportFailure == .cardRemoved)
        }
    }
}
