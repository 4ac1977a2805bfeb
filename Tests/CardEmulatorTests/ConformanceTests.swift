import CardEmulator
import MifareClassic
import SmartCard
import Testing
import TestSupport

let keyA = MifareKey(hex: "A1A2A3A4A5A6")!
let keyB = MifareKey(hex: "B1B2B3B4B5B6")!

/// A 1K card whose sector 1 has the data condition `data` on all three groups and trailer 011 (key B secret),
/// blocks 4, 5, 6 holding value blocks of 100.
func card(data: AccessCondition, trailer: AccessCondition = AccessCondition(code: 0b011)!, magic: Bool = false) throws -> EmulatedCard {
    var image = [UInt8](repeating: 0, count: 1024)
    image.replaceSubrange(0..<16, with: [0x11, 0x22, 0x33, 0x44, 0x44, 0x08, 0x04, 0x00] + [UInt8](repeating: 0x62, count: 8))
    for sector in 0..<16 {
        image.replaceSubrange((sector * 4 + 3) * 16..<(sector * 4 + 4) * 16, with: SectorTrailer.transport.block)
    }
    for block in 4...6 { image.replaceSubrange(block * 16..<block * 16 + 16, with: ValueBlock(value: 100, address: UInt8(block)).block) }
    let trailer = SectorTrailer(keyA: keyA, accessBits: AccessBits(data: data, trailer: trailer), keyB: keyB)
    image.replaceSubrange(7 * 16..<8 * 16, with: trailer.block)
    return try EmulatedCard(image: image, magic: magic)
}

/// Sends raw APDUs the way a PC/SC client would.
struct Terminal {
    let reader: EmulatedReader
    func send(_ bytes: [UInt8]) -> [UInt8] {
        guard case .response(let response) = reader.handle(bytes) else { return [] }
        return response
    }
    func ok(_ bytes: [UInt8]) -> Bool { send(bytes).suffix(2) == [0x90, 0x00] }
    /// Re-selects the card, loads `key` and authenticates sector 1.
    func authenticate(_ type: KeyType, _ key: MifareKey, block: UInt8 = 7) -> [UInt8] {
        reader.resetCard()
        let structure: UInt8 = reader.kind == .omnikey5422 ? 0x20 : 0x00
        _ = send([0xFF, 0x82, structure, 0x00, 0x06] + key.bytes)
        return send([0xFF, 0x86, 0x00, 0x00, 0x05, 0x01, 0x00, block, type.authenticationCode, 0x00])
    }
}

func be(_ v: Int32) -> [UInt8] { let u = UInt32(bitPattern: v); return [UInt8(u >> 24), UInt8(u >> 16 & 0xFF), UInt8(u >> 8 & 0xFF), UInt8(u & 0xFF)] }
func le(_ v: Int32) -> [UInt8] { be(v).reversed() }

/// ACS Multiple Blocks Mode (READ BINARY with Le = 16 x n) as the ACR1252U-family manuals describe it: data blocks
/// of one sector only; the ACR122U (PN532) reads 16 bytes at most.
@Suite struct MultipleBlocksModeTests {
    @Test func acr1252uReadsUpToASectorsDataBlocks() throws {
        let terminal = Terminal(reader: EmulatedReader(kind: .acr1252u, card: try card(data: AccessCondition(code: 0b110)!)))
        #expect(terminal.authenticate(.a, keyA) == [0x90, 0x00])
        let three = terminal.send([0xFF, 0xB0, 0x00, 0x04, 0x30])
        #expect(three.count == 50 && three.suffix(2) == [0x90, 0x00])
        #expect(Array(three[16..<32]) == ValueBlock(value: 100, address: 5).block)
        #expect(terminal.send([0xFF, 0xB0, 0x00, 0x05, 0x30]) == [0x63, 0x00], "blocks 5-7 include the trailer")
        #expect(terminal.authenticate(.a, keyA) == [0x90, 0x00])
        #expect(terminal.send([0xFF, 0xB0, 0x00, 0x06, 0x20]) == [0x63, 0x00], "block 7 is the trailer")
    }

    @Test func acr122uReadsOneBlock() throws {
        let terminal = Terminal(reader: EmulatedReader(kind: .acr122u, card: try card(data: AccessCondition(code: 0b110)!)))
        #expect(terminal.authenticate(.a, keyA) == [0x90, 0x00])
        #expect(terminal.send([0xFF, 0xB0, 0x00, 0x04, 0x30]) == [0x63, 0x00])
    }
}

@Suite struct DatasheetConformanceTests {
    /// Every data-block condition x key x operation, through each value-capable firmware, against Table 8.
    @Test(arguments: [ReaderKind.acr122u, .acr1252u, .omnikey5422])
    func dataBlockTable(kind: ReaderKind) throws {
        for (condition, permitted) in Datasheet.dataRows {
            for (type, key) in [(KeyType.a, keyA), (.b, keyB)] {
                let reader = EmulatedReader(kind: kind, card: try card(data: condition))
                let terminal = Terminal(reader: reader)
                func attempt(_ apdu: [UInt8]) -> Bool {
                    #expect(terminal.authenticate(type, key) == [0x90, 0x00])
                    return terminal.ok(apdu)
                }
                let label = "\(kind) \(condition) \(type)"
                #expect(attempt([0xFF, 0xB0, 0x00, 0x04, 0x10]) == permitted[0].allows(type), "read \(label)")
                #expect(attempt([0xFF, 0xD6, 0x00, 0x04, 0x10] + ValueBlock(value: 100, address: 4).block) == permitted[1].allows(type), "write \(label)")
                let decrementAllowed = permitted[3].allows(type)
                if kind == .omnikey5422 {
                    #expect(attempt([0xFF, 0xD4, 0x00, 0x05, 0x04] + le(1)) == (permitted[2].allows(type) && decrementAllowed), "inc \(label)")
                    #expect(attempt([0xFF, 0xD8, 0x00, 0x05, 0x04] + le(1)) == decrementAllowed, "dec \(label)")
                } else {
                    #expect(attempt([0xFF, 0xD7, 0x00, 0x05, 0x05, 0x01] + be(1)) == (permitted[2].allows(type) && decrementAllowed), "inc \(label)")
                    #expect(attempt([0xFF, 0xD7, 0x00, 0x05, 0x05, 0x02] + be(1)) == decrementAllowed, "dec \(label)")
                    #expect(attempt([0xFF, 0xD7, 0x00, 0x05, 0x02, 0x03, 0x06]) == decrementAllowed, "restore \(label)")
                }
            }
        }
    }

    /// Trailer reads and writes against Table 7, key A only (key B readable in half the rows).
    @Test func trailerTable() throws {
        for (condition, permitted) in Datasheet.trailerRows {
            let reader = EmulatedReader(kind: .omnikey5422, card: try card(data: .transportData, trailer: condition))
            let terminal = Terminal(reader: reader)
            #expect(terminal.authenticate(.a, keyA) == [0x90, 0x00])
            let read = terminal.send([0xFF, 0xB0, 0x00, 0x07, 0x10])
            #expect(read.count == 18)
            #expect(read[0..<6].allSatisfy { $0 == 0 }, "key A never reads back")
            #expect((read[6..<9] != [0, 0, 0]) == permitted[2].allows(.a), "access bits readable \(condition)")
            #expect((Array(read[10..<16]) == keyB.bytes) == permitted[4].allows(.a), "key B readable \(condition)")
            // Rewrite the trailer with new keys but the same access bits: each field changes only where allowed.
            let newA = MifareKey(hex: "0A0A0A0A0A0A")!, newB = MifareKey(hex: "0B0B0B0B0B0B")!
            let bits = AccessBits(data: .transportData, trailer: condition)
            _ = terminal.send([0xFF, 0xD6, 0x00, 0x07, 0x10] + SectorTrailer(keyA: newA, accessBits: bits, keyB: newB).block)
            let stored = Array(reader.currentCard!.memory[112..<128])
            #expect((Array(stored[0..<6]) == newA.bytes) == permitted[1].allows(.a), "key A write \(condition)")
            #expect((Array(stored[10..<16]) == newB.bytes) == permitted[5].allows(.a), "key B write \(condition)")
        }
    }

    @Test func readableKeyBAuthenticatesButGetsNothing() throws {
        let reader = EmulatedReader(kind: .omnikey5422, card: try card(data: .transportData, trailer: .transportTrailer))
        let terminal = Terminal(reader: reader)
        #expect(terminal.authenticate(.b, keyB) == [0x90, 0x00])
        #expect(terminal.send([0xFF, 0xB0, 0x00, 0x04, 0x10]) == [0x69, 0x82])
    }
}

@Suite struct FirmwareBehaviourTests {
    @Test func statusWordsPerFamily() throws {
        let acs = Terminal(reader: EmulatedReader(kind: .acr122u, card: try card(data: .valueBlock)))
        let omnikey = Terminal(reader: EmulatedReader(kind: .omnikey5422, card: try card(data: .valueBlock)))
        #expect(acs.authenticate(.a, keyB) == [0x63, 0x00])
        #expect(omnikey.authenticate(.a, keyB) == [0x69, 0x83])
        #expect(acs.authenticate(.a, keyA) == [0x90, 0x00])
        #expect(acs.send([0xFF, 0xD6, 0x00, 0x04, 0x10] + [UInt8](repeating: 0, count: 16)) == [0x63, 0x00])
        #expect(omnikey.authenticate(.a, keyA) == [0x90, 0x00])
        #expect(omnikey.send([0xFF, 0xD6, 0x00, 0x04, 0x10] + [UInt8](repeating: 0, count: 16)) == [0x69, 0x82])
        let generic = Terminal(reader: EmulatedReader(kind: .generic, card: try card(data: .valueBlock)))
        #expect(generic.authenticate(.a, keyA) == [0x90, 0x00])
        #expect(generic.send([0xFF, 0xD7, 0x00, 0x05, 0x05, 0x02] + be(1)) == [0x6D, 0x00])
        #expect(acs.send([0xFF, 0x82, 0x20, 0x00, 0x06] + keyA.bytes) == [0x63, 0x00], "ACR122U keys are volatile only")
        #expect(omnikey.send([0xFF, 0x82, 0x20, 0x1F, 0x06] + keyA.bytes) == [0x90, 0x00], "OMNIKEY slot 31")
    }

    @Test func uidAndFirmwareVersion() throws {
        let acs = Terminal(reader: EmulatedReader(kind: .acr122u, card: try card(data: .valueBlock)))
        #expect(acs.send([0xFF, 0xCA, 0x00, 0x00, 0x00]) == [0x11, 0x22, 0x33, 0x44, 0x90, 0x00])
        #expect(acs.send([0xFF, 0x00, 0x48, 0x00, 0x00]) == Array("ACR122U215".utf8))
        let generic = Terminal(reader: EmulatedReader(kind: .generic, card: try card(data: .valueBlock)))
        #expect(generic.send([0xFF, 0x00, 0x48, 0x00, 0x00]) == [0x6D, 0x00])
    }

    @Test func valuesAreMSBFirstOnACSAndStoredLSBFirst() throws {
        let reader = EmulatedReader(kind: .acr122u, card: try card(data: .valueBlock))
        let acs = Terminal(reader: reader)
        #expect(acs.authenticate(.a, keyA) == [0x90, 0x00])
        #expect(acs.send([0xFF, 0xD7, 0x00, 0x05, 0x05, 0x02] + be(0x0102)) == [0x90, 0x00])
        #expect(acs.send([0xFF, 0xB1, 0x00, 0x05, 0x04]) == be(100 - 0x0102) + [0x90, 0x00])
        #expect(try ValueBlock(block: Array(reader.currentCard!.memory[80..<96])).value == 100 - 0x0102)
        #expect(acs.send([0xFF, 0xD7, 0x00, 0x05, 0x02, 0x03, 0x06]) == [0x90, 0x00])
        #expect(Array(reader.currentCard!.memory[96..<112]) == Array(reader.currentCard!.memory[80..<96]))
        // Key A may not increment under 110.
        #expect(acs.send([0xFF, 0xD7, 0x00, 0x05, 0x05, 0x01] + be(1)) == [0x63, 0x00])
    }

    @Test func failedAuthenticationHaltsTheCardUntilReselected() throws {
        let reader = EmulatedReader(kind: .omnikey5422, card: try card(data: .valueBlock))
        let t = Terminal(reader: reader)
        #expect(t.authenticate(.a, keyB) == [0x69, 0x83])
        // Without a re-select the right key fails too.
        _ = t.send([0xFF, 0x82, 0x20, 0x01, 0x06] + keyA.bytes)
        #expect(t.send([0xFF, 0x86, 0x00, 0x00, 0x05, 0x01, 0x00, 0x07, 0x60, 0x01]) == [0x69, 0x83])
        #expect(t.authenticate(.a, keyA) == [0x90, 0x00])
        // Not a value block: decrement refused.
        #expect(t.authenticate(.a, keyA) == [0x90, 0x00])
        #expect(t.send([0xFF, 0xB0, 0x00, 0x08, 0x10]) == [0x69, 0x82], "block 8 is in sector 2: not authenticated")
    }

    @Test func blockZeroIsReadOnlyUnlessMagic() throws {
        for magic in [false, true] {
            let reader = EmulatedReader(kind: .omnikey5422, card: try card(data: .valueBlock, magic: magic))
            let t = Terminal(reader: reader)
            #expect(t.authenticate(.a, MifareKey.transport, block: 0) == [0x90, 0x00])
            let ok = t.ok([0xFF, 0xD6, 0x00, 0x00, 0x10] + [UInt8](repeating: 0xAB, count: 16))
            #expect(ok == magic)
        }
    }

    @Test func inconsistentAccessBitsLockTheSector() throws {
        let reader = EmulatedReader(kind: .omnikey5422, card: try card(data: .transportData, trailer: .transportTrailer))
        let t = Terminal(reader: reader)
        #expect(t.authenticate(.a, keyA) == [0x90, 0x00])
        var bad = SectorTrailer(keyA: keyA, accessBits: .transport, keyB: keyB).block
        bad[6] = 0x00
        #expect(t.ok([0xFF, 0xD6, 0x00, 0x07, 0x10] + bad), "a genuine card accepts the write...")
        #expect(t.authenticate(.a, keyA) == [0x69, 0x83], "...and the sector is gone for good")
    }
}

@Suite struct FaultInjectionTests {
    func debitSetup(_ effect: TearEffect) throws -> (EmulatedReader, Terminal) {
        let reader = EmulatedReader(kind: .acr122u, card: try card(data: .valueBlock))
        let t = Terminal(reader: reader)
        #expect(t.authenticate(.a, keyA) == [0x90, 0x00])
        reader.arm(TearPlan(atAPDU: 1, effect: effect))
        return (reader, t)
    }

    @Test(arguments: [(TearEffect.leftOld, Int32(100)), (.notExecuted, 100), (.executed, 90)])
    func tornDecrement(effect: TearEffect, expected: Int32) throws {
        let (reader, _) = try debitSetup(effect)
        #expect(reader.handle([0xFF, 0xD7, 0x00, 0x05, 0x05, 0x02] + be(10)) == .cardRemoved)
        #expect(reader.currentCard == nil)
        #expect(reader.reinsert())
        #expect(try ValueBlock(block: Array(reader.currentCard!.memory[80..<96])).value == expected)
    }

    @Test func garbledWriteIsNeitherOldNorNew() throws {
        let (reader, _) = try debitSetup(.garbled)
        #expect(reader.handle([0xFF, 0xD7, 0x00, 0x05, 0x05, 0x02] + be(10)) == .cardRemoved)
        reader.reinsert()
        let block = Array(reader.currentCard!.memory[80..<96])
        #expect(!ValueBlock.isValueBlock(block))
        #expect(reader.statistics.blockWrites == 1)
    }

    @Test func tearAfterCountsCompleteAPDUs() throws {
        let reader = EmulatedReader(kind: .acr122u, card: try card(data: .valueBlock))
        let events = PresenceLog()
        reader.observePresence { events.append($0) }
        reader.arm(.after(2))
        #expect(reader.handle([0xFF, 0xCA, 0x00, 0x00, 0x00]) != .cardRemoved)
        #expect(reader.handle([0xFF, 0xCA, 0x00, 0x00, 0x00]) != .cardRemoved)
        #expect(reader.handle([0xFF, 0xCA, 0x00, 0x00, 0x00]) == .cardRemoved)
        #expect(events.values == [false])
        #expect(reader.reinsert() && events.values == [false, true])
    }

    @Test func unresponsiveReaderAndChannelErrors() throws {
        let reader = EmulatedReader(kind: .acr122u, card: try card(data: .valueBlock))
        let channel = EmulatedChannel(reader: reader)
        #expect(try channel.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]).suffix(2) == [0x90, 0x00])
        reader.unresponsive = true
        #expect(throws: EmulatedTransportError(transportFailure: .noResponse)) { try channel.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]) }
        reader.unresponsive = false
        reader.remove()
        #expect(throws: EmulatedTransportError(transportFailure: .cardRemoved)) { try channel.transmit([0xFF, 0xCA, 0x00, 0x00, 0x00]) }
    }

    @Test func refusesBadImages() {
        #expect(throws: EmulatorError.invalidImage(byteCount: 10)) { try EmulatedCard(image: [UInt8](repeating: 0, count: 10)) }
    }
}

final class PresenceLog: @unchecked Sendable {
    private var list: [Bool] = []
    private let lock = TestLock()
    func append(_ value: Bool) { lock.run { list.append(value) } }
    var values: [Bool] { lock.run { list } }
}
