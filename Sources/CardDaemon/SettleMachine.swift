import CampusCard
import Foundation

/// A water settlement station as a value: every card that arrives is settled once (`.settle`: the consumption since
/// the last refill recorded for the account, the wallet refilled towards its cap); the card must leave before it is
/// settled again. A blacklisted card is refused and locked; the offline policy (queue, blacklist age) is checked first.
public struct SettleMachine: Sendable {
    public enum Event: Equatable, Sendable {
        case cardArrived(CardUID, blacklisted: BlacklistHit? = nil)
        case cardLeft(CardUID)
        /// The answer to `.settle`.
        case settleFinished(CardUID, SettleOutcome, decisions: [EarlierDecision] = [])
        case lockFinished(CardUID, LockOutcome)
        case context(TerminalContext)
        case tick
    }

    public enum Action: Equatable, Sendable {
        /// Settle the card on the reader (`CampusCardOperations.waterSettle(terminal:)`), then send `.settleFinished`.
        case settle(CardUID)
        case lock(CardUID, LockStatus)
        case notify(Notice)
    }

    public enum Notice: Equatable, Sendable {
        case cardArrived(CardUID)
        case cardLeft(CardUID)
        case settled(CardUID, SettlementSummary)
        case cardRefused(CardUID, Refusal)
        case settlementUndetermined(CardUID, message: String)
        case cardLocked(CardUID, LockStatus)
        case lockFailed(CardUID, message: String)
        case earlierDecided(CardUID, [EarlierDecision])
    }

    enum InFlight: Equatable, Sendable {
        case settle(CardUID)
        case lock(CardUID, LockStatus)
    }

    public private(set) var policy: OfflinePolicy
    public private(set) var context: TerminalContext
    var card: (uid: CardUID, blacklisted: BlacklistHit?, served: Bool)?
    var inFlight: InFlight?

    public init(policy: OfflinePolicy = .defaults, context: TerminalContext = TerminalContext()) {
        self.policy = policy
        self.context = context
    }

    /// The settlement service sent new offline limits: they apply from the next check on.
    public mutating func apply(policy: OfflinePolicy) { self.policy = policy }

    public mutating func handle(_ event: Event, now: Date) -> [Action] {
        var actions: [Action] = []
        switch event {
        case .cardArrived(let uid, let blacklisted):
            if let present = card {
                if present.uid == uid { return actions }
                actions.append(.notify(.cardLeft(present.uid)))
            }
            card = (uid, blacklisted, false)
            actions.append(.notify(.cardArrived(uid)))
        case .cardLeft(let uid):
            guard card?.uid == uid else { return actions }
            card = nil
            actions.append(.notify(.cardLeft(uid)))
        case .settleFinished(let uid, let outcome, let decisions):
            if !decisions.isEmpty { actions.append(.notify(.earlierDecided(uid, decisions))) }
            if inFlight == .settle(uid) { inFlight = nil }
            switch outcome {
            case .done(let summary): actions.append(.notify(.settled(uid, summary)))
            case .refused(let refusal): actions.append(.notify(.cardRefused(uid, refusal)))
            case .undetermined(let message): actions.append(.notify(.settlementUndetermined(uid, message: message)))
            }
        case .lockFinished(let uid, let outcome):
            guard case .lock(uid, let status) = inFlight else { break }
            inFlight = nil
            switch outcome {
            case .locked: actions.append(.notify(.cardLocked(uid, status)))
            case .failed(let message): actions.append(.notify(.lockFailed(uid, message: message)))
            }
        case .context(let context):
            self.context = context
        case .tick:
            break
        }
        guard inFlight == nil, let present = card, !present.served else { return actions }
        card?.served = true
        if let hit = present.blacklisted {
            actions.append(.notify(.cardRefused(present.uid, Refusal(.blacklisted, "the card is on the blacklist (\(hit.status.rawValue)): refused and locked; send the holder to the card office"))))
            inFlight = .lock(present.uid, hit.status)
            actions.append(.lock(present.uid, hit.status))
        } else if let refusal = policy.check(amount: .zero, queue: context.queue, blacklistUpdatedAt: context.blacklistUpdatedAt, now: now) {
            actions.append(.notify(.cardRefused(present.uid, refusal.refusal)))
        } else {
            inFlight = .settle(present.uid)
            actions.append(.settle(present.uid))
        }
        return actions
    }
}
