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

    @Test func mutatedImages() throws {
        let bench = try CardBench()
        let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
        try bench.issueAndLoad(10_000, terminal: pos)
        let original = try #require(bench.reader.currentCard).memory
        // Our sectors' bytes: 0-5 (blocks 0-23), block 0 excluded (read-only on a genuine card).
        let candidates = Array(16..<(24 * 16))
        var outcomes: [String: Int] = [:]
        let runs = 400
        for seed in 0..<UInt64(runs) {
            var random = SplitMix(state: seed)
            var image = original
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let index = candidates.randomElement(using: &random)!
                image[index] ^= UInt8.random(in: 1...255, using: &random)
            }
            bench.reader.insert(try EmulatedCard(image: image))
            let ops = bench.operations()
            do {
                try ops.checkApplication()
                _ = try ops.readIdentity()
                let state = try ops.debit(Fen(100), terminal: Terminal(id: 8, journal: InMemoryTerminalJournal()))
                #expect(state.balance <= Fen(9_900), "seed \(seed): a mutation created money (\(state.balance))")
                outcomes["debited", default: 0] += 1
            } catch let error as CardOperationError {
                outcomes[error.code.rawValue, default: 0] += 1
            } catch let error as MifareError {
                outcomes["mifare " + error.code.rawValue, default: 0] += 1
            } catch {
                Issue.record("seed \(seed): untyped error \(error)")
            }
        }
        print("mutated cards: \(runs) seeded images -> \(outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        #expect(outcomes.values.reduce(0, +) == runs)
        #expect(outcomes["mac-mismatch", default: 0] > 0 && outcomes["not-campus-card", default: 0] > 0)
    }
}
