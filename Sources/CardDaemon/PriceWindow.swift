import CampusCard
import Foundation

/// A fixed-price window of a POS (e.g. 07:00–09:00 breakfast at 3.50): while it is active and no sale is armed, every
/// card that arrives is debited `price`, with no arm needed.
public struct PriceWindow: Hashable, Sendable {
    public var name: String
    /// Minutes after local midnight: active from `start` (inclusive) to `end` (exclusive), `start < end`.
    public var start: Int
    public var end: Int
    public var price: Fen

    public init(name: String, start: Int, end: Int, price: Fen) {
        self.name = name
        self.start = start
        self.end = end
        self.price = price
    }

    /// Whether the window is active at `date` in `timeZone` (the terminal's local time).
    public func isActive(at date: Date, in timeZone: TimeZone) -> Bool {
        // The zone's offset at that instant, then arithmetic: a Calendar would load ICU's calendar data into cardd's
        // memory at every card (HardwareNotes.md, "cardd's memory").
        let local = Int(date.timeIntervalSince1970.rounded(.down)) + timeZone.secondsFromGMT(for: date)
        let minute = (local % 86_400 + 86_400) % 86_400 / 60
        return start <= minute && minute < end
    }

    /// "07:00" → 420; `nil` for anything that is not HH:MM within a day ("24:00" is allowed as an end).
    public static func minutes(_ text: String) -> Int? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ $0.count == 2 && $0.allSatisfy(\.isASCII) }),
              let hours = Int(parts[0]), let minutes = Int(parts[1]), (0...59).contains(minutes) else { return nil }
        let value = hours * 60 + minutes
        return (0...1440).contains(value) ? value : nil
    }
}
