import Foundation
import MifareClassic
import Testing

@Suite struct ValueBlockTests {
    @Test(arguments: [Int32(0), 1, 1000, -1, .max, .min, 0x1234_5678])
    func roundTrip(value: Int32) throws {
        let block = ValueBlock(value: value, address: 9)
        #expect(try ValueBlock(block: block.block) == block)
    }

    @Test func layoutIsLittleEndianWithInvertedCopies() {
        #expect(ValueBlock(value: 0x0102_0304, address: 0x09).block == [
            0x04, 0x03, 0x02, 0x01, 0xFB, 0xFC, 0xFD, 0xFE, 0x04, 0x03, 0x02, 0x01, 0x09, 0xF6, 0x09, 0xF6,
        ])
    }

    @Test func everySingleByteCorruptionIsRejected() {
        let good = ValueBlock(value: 1000, address: 8).block
        for index in 0..<16 {
            var bad = good
            bad[index] ^= 0x01
            #expect(!ValueBlock.isValueBlock(bad), "byte \(index)")
        }
        #expect(!ValueBlock.isValueBlock([UInt8](repeating: 0, count: 16)))
        #expect(throws: ValueBlockError.self) { try ValueBlock(block: [1, 2, 3]) }
    }
}

@Suite struct CardImageTests {
    func sampleImage() throws -> [UInt8] {
        let url = try #require(Bundle.module.url(forResource: "sample-1k", withExtension: "mfd", subdirectory: "Fixtures"))
        return Array(try Data(contentsOf: url))
    }

    @Test func fixtureIsAValidCard() throws {
        let image = try CardImage(mfd: sampleImage())
        #expect(image.size == .classic1K)
        #expect(image.uidCheckByteIsValid)
        #expect(image.trailerProblems().isEmpty)
        #expect(try image.trailer(sector: 0).accessBits == .transport)
        #expect(try ValueBlock(block: image.block(5)).value == 1000)
    }

    @Test func mfdAndJSONRoundTripByteIdentical() throws {
        let bytes = try sampleImage()
        let image = try CardImage(mfd: bytes)
        #expect(image.mfd == bytes)
        let json = try JSONEncoder().encode(image)
        let decoded = try JSONDecoder().decode(CardImage.self, from: json)
        #expect(decoded.mfd == bytes)
        let text = String(decoding: json, as: UTF8.self)
        #expect(text.contains("onecard-mifare-dump-v1") && text.contains("read A|B"))
    }

    @Test func fourK() throws {
        var bytes = [UInt8](repeating: 0, count: 4096)
        for sector in 0..<40 {
            let trailer = CardSize.classic4K.trailerBlock(ofSector: sector)
            bytes.replaceSubrange(trailer * 16..<trailer * 16 + 16, with: SectorTrailer.transport.block)
        }
        let image = try CardImage(mfd: bytes)
        #expect(image.size == .classic4K && image.trailerProblems().isEmpty)
        #expect(CardSize.classic4K.trailerBlock(ofSector: 39) == 255)
        #expect(CardSize.classic4K.accessGroup(ofBlock: 128 + 7) == 1)
    }

    @Test func badImagesAreRefused() throws {
        #expect(throws: CardImageError.self) { try CardImage(mfd: [UInt8](repeating: 0, count: 1000)) }
        var bytes = try sampleImage()
        bytes[16 * 7 + 6] ^= 0x10  // break sector 1's access bits
        let image = try CardImage(mfd: bytes)
        #expect(image.trailerProblems().map(\.sector) == [1])
        let json = Data(#"{"blocks":["00"]}"#.utf8)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(CardImage.self, from: json) }
    }

    @Test func trailerDescriptionHidesKeys() throws {
        let trailer = SectorTrailer(keyA: MifareKey(hex: "112233445566")!, accessBits: .transport, keyB: MifareKey(hex: "AABBCCDDEEFF")!)
        #expect(!"\(trailer)".contains("1122") && !"\(trailer)".contains("AABB"))
        #expect(try SectorTrailer(block: trailer.block) == trailer)
    }
}
