import CardReader
import Foundation

/// What the card office's repair found and did to each part of a card.
public struct RepairReport: Sendable {
    /// One part's decision: what it was found in and what was done, in a sentence.
    public struct Part: Sendable, Hashable {
        /// `ok` (valid as found), `repaired` (valid now, money conserved), `reset` (the water wallet re-initialised:
        /// its unverifiable value goes to the settlement service) or `unrepairable` (left as found).
        public var result: String
        public var detail: String
    }
    public var identity: Part
    public var purse: Part
    public var water: Part
    public var purseState: PurseState?
    public var waterState: WaterState?
    /// The water wallet's value found when it was reset (no MAC'd record vouched for it).
    public var unverifiedWater: Fen?
    /// Every part is valid now.
    public var isValid: Bool { [identity, purse, water].allSatisfy { $0.result != "unrepairable" } }
}

extension CampusCardOperations {
    /// The card office's repair (key B): brings a genuine card back to a valid, MAC'd state, money conserved, and says
    /// what it decided. `records`: intents from terminals' journals (the office's own and any imported), whose
    /// `recordBefore` — a record a terminal verified before its write — can vouch for a value on the card when a torn
    /// record left nothing on the card that does. Each part is decided on its own:
    /// - purse: resolved as at any terminal (backup repaired, rolled back, rebuilt from the log) or, when the record
    ///   was torn and the log does not vouch for the backup, put back from a record in `records`; else left as found;
    /// - identity: a block 5 torn by a status change is rewritten from the purse record's status (see
    ///   `repairTornIdentity`);
    /// - water: resolved, or put back from `records`; else reset to empty (the value found is reported as
    ///   unverified; the consumption since the last refill is the settlement service's to reconcile).
    /// This office terminal's open intents for the card are decided against what the card shows afterwards.
    public func repair(terminal: Terminal, records: [TransactionIntent] = []) throws -> RepairReport {
        guard keystore.roles(version: keystore.currentVersion).contains(.loader) else {
            throw CardOperationError(.missingKey, "repairing a card needs the loader master: run it with the card office's keystore")
        }
        let uid = try session.uid()
        let uidHex = uid.map { String(format: "%02X", $0) }.joined()
        let mine = records.filter { $0.cardUID == uidHex }.sorted { $0.createdAt > $1.createdAt }
        let unrepairable = { (error: any Error) in RepairReport.Part(result: "unrepairable", detail: "\(error)") }

        var purseState: PurseState?
        let purse: RepairReport.Part
        do {
            let state = try readPurse(terminal: terminal, witnesses: mine.filter(\.isPurse).compactMap(\.recordBeforeBytes))
            try settleOpenIntents(uidHex: uidHex, state: state, journal: terminal.journal)
            try? fillLogGap(state)
            purseState = state
            purse = switch state.resolution {
            case .consistent: .init(result: "ok", detail: "balance \(state.balance.yuan) yuan, counter \(state.record.counter)")
            case .backupRepaired: .init(result: "repaired", detail: "an operation was done but its backup copy lagged: backup repaired, balance \(state.balance.yuan) yuan")
            case .rolledBack: .init(result: "repaired", detail: "an operation torn before its commit (or its record put back from a terminal's record): not done, balance \(state.balance.yuan) yuan")
            case .recordRebuilt: .init(result: "repaired", detail: "a torn record rebuilt from the log: balance \(state.balance.yuan) yuan, counter \(state.record.counter)")
            }
        } catch {
            purse = unrepairable(error)
        }

        let identity: RepairReport.Part
        do {
            if try identityIsValid() {
                let found = try readIdentity(repairing: false)
                if let purseState, try reconcileStatus(found, with: purseState).status != found.status {
                    identity = .init(result: "repaired", detail: "a status change torn between its writes: the identity now shows the purse record's status (\(purseState.record.status.name))")
                } else {
                    identity = .init(result: "ok", detail: "MAC valid")
                }
            } else {
                let repaired = try readIdentity(repairing: true)
                identity = .init(result: "repaired", detail: "block 5 torn by a status change: rewritten with the purse record's status (\(repaired.status.name)); holder limits and PIN, if any, must be set again")
            }
        } catch {
            identity = unrepairable(error)
        }

        var waterState: WaterState?
        var unverified: Fen?
        let water: RepairReport.Part
        do {
            let state = try readWater(terminal: terminal, witnesses: mine.filter { !$0.isPurse }.compactMap(\.recordBeforeBytes))
            try settleWaterIntents(state, journal: terminal.journal)
            if state.record.rebuilt && state.record.balanceAfterRefill < state.balance {
                throw CardOperationError(.waterInterrupted, "rebuilt by an earlier version from settlement data older than the last refill")
            }
            waterState = state
            water = state.resolution == .consistent
                ? .init(result: "ok", detail: "water balance \(state.balance.yuan) yuan")
                : .init(result: "repaired", detail: "\(state.resolution.rawValue): water balance \(state.balance.yuan) yuan")
        } catch let error as CardOperationError where error.code == .waterInterrupted {
            do {
                let result = try resetWater(identity: readIdentity(repairing: false), terminal: terminal, reference: nil, target: .zero) { _ in .zero }
                waterState = result.state
                unverified = result.unverifiedBalance
                water = .init(result: "reset", detail: "no record vouched for the water wallet: emptied; the \((result.unverifiedBalance ?? .zero).yuan) yuan found and the consumption since the last refill are for the settlement service to reconcile")
            } catch {
                water = unrepairable(error)
            }
        } catch {
            water = unrepairable(error)
        }
        return RepairReport(identity: identity, purse: purse, water: water, purseState: purseState, waterState: waterState, unverifiedWater: unverified)
    }

    /// Whether the identity verifies as it is (no repair).
    private func identityIsValid() throws -> Bool {
        do {
            _ = try readIdentity(repairing: false)
            return true
        } catch let error as CardOperationError where error.code == .tampered {
            return false
        }
    }
}
