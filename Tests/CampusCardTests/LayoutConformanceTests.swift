import CampusCard
import CardEmulator
import Foundation
import MifareClassic
import Testing

/// An issued card's memory, block by block, against the sector map of docs/card-layout.md: if issue and the
/// document drift apart, this fails.
@Suite struct LayoutConformanceTests {
    @Test func issuedCardMatchesTheDocumentedSectorMap() throws {
        let bench = try CardBench()
        let identity = Identity(serial: 20_260_001, account: 3_120_456, type: .student, keyVersion: 1,
                                issued: CardDay(bench.now), expires: CardDay(rawValue: CardDay(bench.now).rawValue + 1_460))
        try bench.operations().issue(identity)
        let memory = try #require(bench.reader.currentCard?.memory)
        func block(_ number: Int) -> [UInt8] { Array(memory[number * 16..<number * 16 + 16]) }
        let uid = Array(memory[0..<4])
        let keystore = bench.keystore
        func key(_ sector: Int, _ role: KeyRole) throws -> [UInt8] { try keystore.sectorKey(uid: uid, sector: sector, role: role, version: 1).bytes }

        // Sector 0: MAD v1 registering sectors 1-11 to 8D01 (layout v2), public MAD key A, 78 77 88, GPB C1.
        let mad = try MAD(blocks: block(1) + block(2))
        #expect(mad.info == 0)
        #expect(mad.sectors(of: CampusCardOperations.applicationID) == Array(1...11))
        #expect(mad.aids[11...].allSatisfy { $0 == MAD.free })
        #expect(block(3) == [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0x78, 0x77, 0x88, 0xC1] + (try key(0, .loader)))

        // Sectors 1-11: diversified keys A and B, the documented access bytes, user byte 69.
        var accessBytes: [Int: [UInt8]] = [1: [0x78, 0x77, 0x88], 2: [0x19, 0x67, 0x8E], 3: [0x19, 0x67, 0x8E]]
        for sector in 4...11 { accessBytes[sector] = [0x7F, 0x07, 0x88] }
        for sector in 1...11 {
            let trailer = block(sector * 4 + 3)
            #expect(trailer == (try key(sector, .terminal)) + accessBytes[sector]! + [0x69] + (try key(sector, .loader)), "sector \(sector)")
            #expect(try key(sector, .terminal) != key(sector, .loader))
        }
        // What those bytes mean, read back through the MifareClassic model.
        #expect(AccessBits(groups: [.transportData, .valueBlock, .valueBlock, AccessCondition(code: 0b011)!]).bytes == [0x19, 0x67, 0x8E])
        #expect(AccessBits(data: .transportData, trailer: AccessCondition(code: 0b011)!).bytes == [0x7F, 0x07, 0x88])
        #expect(AccessBits(data: AccessCondition(code: 0b100)!, trailer: AccessCondition(code: 0b011)!).bytes == [0x78, 0x77, 0x88])

        // Sectors 12-15 untouched: transport trailers, empty data.
        for sector in 12...15 {
            #expect(block(sector * 4 + 3) == SectorTrailer.transport.block, "sector \(sector)")
        }

        // Records and values where the document puts them.
        let macKey = try keystore.macKey(uid: uid, version: 1)
        #expect(try Identity(first: block(4), second: block(5), uid: uid, macKey: macKey) == identity)
        let settlement = try WaterSettlement(block: block(6), uid: uid, macKey: macKey)
        #expect(settlement.cap == WaterSettlement.defaultCap && settlement.balanceAfterRefill == .zero)
        #expect(PurseRecord.vouches(block(8), for: .zero, uid: uid, macKey: macKey))
        let record = try PurseRecord(block: block(8))
        #expect(record.counter == 0 && record.lastOperation == .issue && record.status == .normal && record.expires == identity.expires)
        // Address byte 89: layout v2's 24-entry log ring (09 on a layout v1 card).
        #expect(block(9) == ValueBlock(value: 0, address: 0x89).block && block(10) == block(9))
        #expect(WaterRecord.vouches(block(12), for: 0, uid: uid, macKey: macKey))
        #expect(block(13) == ValueBlock(value: 0, address: 13).block && block(14) == block(13))
        let ringBlocks: [Int] = [16, 17, 18, 20, 21, 22, 24, 25, 26, 28, 29, 30, 32, 33, 34, 36, 37, 38, 40, 41, 42, 44, 45, 46]
        #expect(LogRing.v2.blocks == ringBlocks)
        for number in LogRing.v2.blocks { #expect(block(number) == [UInt8](repeating: 0, count: 16)) }
    }
}
