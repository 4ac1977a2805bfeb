import CampusCard
import CardEmulator
import CardReader
import Foundation
import MifareClassic
import Testing

/// Seeded random mutations of an issued card: no crash, every refusal typed, and no mutation creates money.
@Suite struct MutatedCardTests {
    /// A small deterministic generator (SplitMix64) so a failure names a reproducible seed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A quarter of the images carry a well-formed value block with another amount in the purse or the water wallet
    /// (one copy or both), the rest random byte flips. After every mutated image, whatever the debit did (debited, refused, thrown), the money a fresh tap can read
    /// from the card is never more than before: at most 99.00 yuan in the purse after a debit of 1.00 that went
    /// through, at most 100.00 otherwise, and never a water balance (the wallet was empty).
    @Test func mutatedImages() throws {
        let bench = try CardBench()
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(10_000, terminal: pos)
        let original = try #require(bench.reader.currentCard).memory
        // Our sectors' bytes: 0-5 (blocks 0-23), block 0 excluded (read-only on a genuine card).
        let candidates = Array(16..<(24 * 16))
        var outcomes: [String: Int] = [:]
        var purseReadAfter = 0, waterReadAfter = 0
        let runs = 400
        for seed in 0..<UInt64(runs) {
            var random = SplitMix(state: seed)
            var image = original
            if seed % 4 == 0 {
                // A well-formed value block with another amount (what an attacker with key B writes): random byte
                // flips almost never yield one, so without these the money checks below would meet no forged balance.
                let block = [9, 10, 13, 14].randomElement(using: &random)!
                let both = Bool.random(using: &random)
                let value = Int32.random(in: 0...200_000, using: &random)
                for target in both ? [block, block == 9 || block == 13 ? block + 1 : block - 1] : [block] {
                    let address = UInt8(target == 10 ? 9 : target == 14 ? 13 : target)
                    image.replaceSubrange(target * 16..<(target + 1) * 16, with: ValueBlock(value: value, address: address).block)
                }
            } else {
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    let index = candidates.randomElement(using: &random)!
                    image[index] ^= UInt8.random(in: 1...255, using: &random)
                }
            }
            bench.reader.insert(try EmulatedCard(image: image))
            let ops = bench.operations()
            var debited = false
            do {
                try ops.checkApplication()
                _ = try ops.readIdentity()
                let state = try ops.debit(Fen(100), terminal: Terminal(id: 8, journal: InMemoryTerminalJournal()))
                debited = true
                #expect(state.balance <= Fen(9_900), "seed \(seed): a mutation created money (\(state.balance))")
                outcomes["debited", default: 0] += 1
            } catch let error as CardOperationError {
                outcomes[error.code.rawValue, default: 0] += 1
            } catch let error as MifareError {
                outcomes["mifare " + error.code.rawValue, default: 0] += 1
            } catch {
                Issue.record("seed \(seed): untyped error \(error)")
            }
            // The money on the card as a fresh tap reads it, whatever happened above.
            if let balance = try? bench.operations().readPurse().balance {
                purseReadAfter += 1
                #expect(balance <= Fen(debited ? 9_900 : 10_000), "seed \(seed): the purse reads \(balance) after the mutation")
            }
            if let water = try? bench.operations().readWater().balance {
                waterReadAfter += 1
                #expect(water <= .zero, "seed \(seed): the water wallet reads \(water) after the mutation")
            }
        }
        print("mutated cards: \(runs) seeded images -> \(outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")); balance read after: purse \(purseReadAfter), water \(waterReadAfter)")
        // The mutations reach every outcome that matters: debits, MAC refusals, foreign-looking cards, and balances
        // that can still be read afterwards (where the money check above applies).
        #expect(outcomes["debited", default: 0] > 0 && outcomes["mac-mismatch", default: 0] > 0 && outcomes["not-campus-card", default: 0] > 0)
        #expect(purseReadAfter > runs / 2 && waterReadAfter > runs / 2)
    }
}
