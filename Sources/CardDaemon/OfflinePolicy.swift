import CampusCard
import Foundation

/// Why the offline policy refuses a transaction: a code and one line for the operator.
public struct PolicyRefusal: Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// One debit above `maxDebit`.
        case amount = "offline-amount-over-limit"
        /// `maxUnsentCount` unsent transactions already.
        case unsentCount = "unsent-count-over-limit"
        /// The unsent transactions plus this one would pass `maxUnsentTotal`.
        case unsentTotal = "unsent-total-over-limit"
        /// The oldest unsent transaction is older than `maxUnsentAge`.
        case unsentAge = "unsent-too-old"
        /// The blacklist was last updated longer than `maxBlacklistAge` ago.
        case blacklistStale = "blacklist-stale"
        /// No blacklist was ever loaded (and `maxBlacklistAge` is set).
        case blacklistMissing = "blacklist-missing"
    }
    public var code: Code
    public var message: String
    public var description: String { "\(code.rawValue): \(message)" }

    /// As a machine's refusal (same code).
    public var refusal: Refusal {
        let code: Refusal.Code = switch code {
        case .amount: .offlineAmount
        case .unsentCount: .unsentCount
        case .unsentTotal: .unsentTotal
        case .unsentAge: .unsentAge
        case .blacklistStale: .blacklistStale
        case .blacklistMissing: .blacklistMissing
        }
        return Refusal(code, message)
    }
}

/// The limits a store-and-forward terminal keeps while its transactions are not yet acknowledged by the settlement
/// service (docs/cardd-config.md, "offline"). `nil` switches a limit off.
///
/// Defaults, from the payment-terminal figures in the domain reference (campus-card-domain.md): one debit at most
/// 100.00 yuan (Worldpay's per-payment cap), at most 500 unsent records (Moneris) worth at most 1,000.00 yuan
/// (Worldpay's total), the oldest at most 7 days old (Clover); a blacklist at most 24 hours old (our choice: ykt keeps
/// a "max time since blacklist update" parameter without a published value, and Octopus cut its lost-card window to 3 h).
public struct OfflinePolicy: Hashable, Sendable {
    public var maxDebit: Fen?
    public var maxUnsentCount: Int?
    public var maxUnsentTotal: Fen?
    public var maxUnsentAge: TimeInterval?
    public var maxBlacklistAge: TimeInterval?

    public init(maxDebit: Fen? = Fen(10_000), maxUnsentCount: Int? = 500, maxUnsentTotal: Fen? = Fen(100_000),
                maxUnsentAge: TimeInterval? = 7 * 86_400, maxBlacklistAge: TimeInterval? = 86_400) {
        self.maxDebit = maxDebit
        self.maxUnsentCount = maxUnsentCount
        self.maxUnsentTotal = maxUnsentTotal
        self.maxUnsentAge = maxUnsentAge
        self.maxBlacklistAge = maxBlacklistAge
    }

    public static let defaults = OfflinePolicy()
    /// Every limit off (tests, a bench terminal).
    public static let unlimited = OfflinePolicy(maxDebit: nil, maxUnsentCount: nil, maxUnsentTotal: nil, maxUnsentAge: nil, maxBlacklistAge: nil)

    /// Whether a transaction of `amount` (0 for one that moves no purse money, e.g. a settlement) may be written now.
    /// Rules, first match wins: the blacklist (never loaded, or too old: a lost card could go unrefused), the amount of
    /// one debit, then the unsent queue (count, total with this one, age of the oldest). The queue limits refuse a new
    /// transaction once reached: the terminal must upload before it trades on.
    public func check(amount: Fen, queue: QueueSummary, blacklistUpdatedAt: Date?, now: Date) -> PolicyRefusal? {
        if let maxBlacklistAge {
            guard let updated = blacklistUpdatedAt else {
                return PolicyRefusal(code: .blacklistMissing, message: "no blacklist has been loaded on this terminal: sync it with the settlement service before taking cards")
            }
            let age = now.timeIntervalSince(updated)
            if age > maxBlacklistAge {
                return PolicyRefusal(code: .blacklistStale, message: "the blacklist is \(Self.hours(age)) old, more than the \(Self.hours(maxBlacklistAge)) allowed: bring the terminal online to update it")
            }
        }
        if let maxDebit, amount > maxDebit {
            return PolicyRefusal(code: .amount, message: "\(amount.yuan) yuan is more than the \(maxDebit.yuan) yuan one offline debit may take: take a smaller amount or go online")
        }
        if let maxUnsentCount, queue.count >= maxUnsentCount {
            return PolicyRefusal(code: .unsentCount, message: "\(queue.count) transactions are waiting for upload, the most this terminal may hold is \(maxUnsentCount): bring it online to upload them")
        }
        if let maxUnsentTotal, queue.total.rawValue + amount.rawValue > maxUnsentTotal.rawValue {
            return PolicyRefusal(code: .unsentTotal, message: "the unsent transactions (\(queue.total.yuan) yuan) plus this one (\(amount.yuan)) pass the \(maxUnsentTotal.yuan) yuan this terminal may hold: bring it online to upload them")
        }
        if let maxUnsentAge, let oldest = queue.oldest, now.timeIntervalSince(oldest) > maxUnsentAge {
            return PolicyRefusal(code: .unsentAge, message: "the oldest unsent transaction is \(Self.hours(now.timeIntervalSince(oldest))) old, more than the \(Self.hours(maxUnsentAge)) allowed: bring the terminal online to upload it")
        }
        return nil
    }

    static func hours(_ interval: TimeInterval) -> String {
        let minutes = Int((interval / 60).rounded(.down))
        return minutes < 120 ? "\(minutes) min" : "\(minutes / 60) h"
    }
}
