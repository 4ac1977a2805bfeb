import CampusCard
import CardDaemon
import Foundation
import SettlementClient

/// The card operations the mode machines ask for, run on the attached card through `CardPort`, each reported as a
/// value (`OperationReport`) and turned into the machines' results by CardDaemon's adapters: done whenever the card
/// carries it (even when a step after the commit failed), undetermined only when the commit write went unanswered.
struct CardActions: Sendable {
    let port: CardPort
    let keystore: any Keystore
    let terminal: Terminal

    func debit(_ uid: CardUID, amount: Fen, pin: PIN?) async -> (DebitOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in
            try ops.debit(amount, terminal: terminal, pin: pin)
        }
        return (DebitOutcome(report), EarlierDecision.decided(report.decided))
    }

    /// A load station's load: prepared at the settlement service before the card is written (`OnlineLoadJournal`),
    /// confirmed or reversed after; earlier interrupted loads this tap decides are settled the same way.
    func load(_ uid: CardUID, amount: Fen, client: SettlementClient?) async -> (DebitOutcome, [EarlierDecision]) {
        guard let client else {
            return (.refused(Refusal(.outOfService, "this load station has no settlement service (uplink.url): loads are online only")), [])
        }
        var online = terminal
        online.journal = OnlineLoadJournal(terminal.journal, client: client)
        let report = await port.run(uid: uid, keystore: keystore, terminal: online) { ops, terminal in
            try ops.load(amount, terminal: terminal)
        }
        var warnings: [String] = []
        for (intent, outcome) in report.intents {
            if let outcome, let warning = await OnlineLoad.settle(intent, outcome, client: client) { warnings.append(warning) }
        }
        for decided in report.decided {
            if let warning = await OnlineLoad.settle(decided.intent, decided.outcome, client: client) { warnings.append(warning) }
        }
        var outcome = DebitOutcome(report)
        if case .done(let balance, let earlier) = outcome, !warnings.isEmpty { outcome = .done(balance: balance, warnings: earlier + warnings) }
        return (outcome, EarlierDecision.decided(report.decided))
    }

    func tap(_ uid: CardUID) async -> (TapOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in try ops.tap(terminal: terminal) }
        return (TapOutcome(report), EarlierDecision.decided(report.decided))
    }

    /// A blacklisted card: locked in the purse record's status copy (a terminal has key A only; `lockAtTerminal`).
    func lock(_ uid: CardUID, _ status: LockStatus) async -> LockOutcome {
        LockOutcome(await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, _ in
            try ops.lockAtTerminal(status.identityStatus)
        })
    }

    /// A water controller's check of an arriving card: the MAC'd identity (status, expiry) and the water wallet.
    func waterCheck(_ uid: CardUID, now: Date) async -> (WaterCheckOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in
            WaterCardRead(identity: try ops.readIdentity(), water: try ops.waterTap(terminal: terminal))
        }
        return (WaterCheckOutcome(report, now: now), EarlierDecision.decided(report.decided))
    }

    func waterDebit(_ uid: CardUID, amount: Fen) async -> (DebitOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in
            try ops.waterDebit(amount, terminal: terminal, validityChecked: true)
        }
        return (DebitOutcome(report), EarlierDecision.decided(report.decided))
    }

    func settle(_ uid: CardUID) async -> (SettleOutcome, [EarlierDecision]) {
        let report = await port.run(uid: uid, keystore: keystore, terminal: terminal) { ops, terminal in try ops.waterSettle(terminal: terminal) }
        return (SettleOutcome(report), EarlierDecision.decided(report.decided))
    }
}
