import CampusCard
import CardEmulator
import CardReader
import Foundation
import Testing

/// The OMNIKEY 5422 profile has no value copy command: a debit mirrors its decrement onto the backup, and a torn card
/// that needs a copy to repair is refused (`reader-cannot`) without a write. Every APDU of an OMNIKEY debit torn with
/// every effect: the OMNIKEY's next tap either reads the card or refuses it that way; the card then taken to an
/// ACR122U is valid, the money conserved, and the OMNIKEY's intent decided once it sees the card again.
@Suite struct OmnikeyTearTests {
    @Test func everyTornOmnikeyDebitIsRefusedOrReadAndRepairedOnAnACSReader() throws {
        let probe = try CardBench(kind: .omnikey5422)
        try probe.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
        let probeOps = probe.operations()
        try probeOps.debit(Fen(1_250), terminal: Terminal(id: 7, journal: InMemoryTerminalJournal()))
        let apdus = probeOps.session.apduCount
        var scenarios = 0, refused = 0
        for index in 1...apdus {
            for effect in TearEffect.allCases {
                let label = "OMNIKEY debit torn at APDU \(index)/\(apdus) (\(effect.rawValue))"
                let omnikey = try CardBench(kind: .omnikey5422)
                let pos = Terminal(id: 7, journal: InMemoryTerminalJournal())
                try omnikey.issueAndLoad(10_000, terminal: Terminal(id: 1, journal: InMemoryTerminalJournal()))
                omnikey.reader.arm(TearPlan(atAPDU: index, effect: effect))
                let warnings = (try? omnikey.operations().debit(Fen(1_250), terminal: pos))?.warnings
                #expect(warnings == nil || warnings?.isEmpty == false, "\(label): torn after its commit, it says so")
                #expect(omnikey.reader.reinsert(), "\(label): the tear fired")
                omnikey.reader.arm(nil)
                let writes = omnikey.reader.statistics.blockWrites
                do {
                    _ = try omnikey.operations().tap(terminal: pos)
                } catch let error as CardOperationError where error.code == .readerCannot {
                    refused += 1
                    #expect(omnikey.reader.statistics.blockWrites == writes, "\(label): a refused repair writes nothing")
                } catch {
                    Issue.record("\(label): the OMNIKEY's tap failed otherwise: \(error)")
                }
                // The holder takes the card to an ACS reader: it repairs whatever the OMNIKEY could not.
                let card = try #require(omnikey.reader.currentCard)
                let acs = EmulatedReader(kind: .acr122u, card: try EmulatedCard(image: card.memory))
                let channel = EmulatedChannel(reader: acs)
                let acsOps = CampusCardOperations(session: MifareSession(channel: channel, profile: .profile(for: .acr122u)),
                                                  keystore: omnikey.keystore, now: omnikey.now, reselect: { try channel.reselect() })
                let state = try acsOps.readPurse()
                #expect([Fen(10_000), Fen(8_750)].contains(state.balance), "\(label): \(state.balance)")
                let outcome = (pos.journal as! InMemoryTerminalJournal).entries.first?.outcome
                if let outcome {
                    #expect((outcome == .notDone) == (state.balance == Fen(10_000)) || outcome == .undetermined, "\(label): \(outcome)")
                }
                scenarios += 1
            }
        }
        print("tear matrix (debit, omnikey5422): \(apdus) APDU indices x \(TearEffect.allCases.count) effects = \(scenarios) scenarios (\(refused) refused by the OMNIKEY as reader-cannot, then repaired on an ACR122U)")
        #expect(scenarios == apdus * TearEffect.allCases.count)
    }
}
