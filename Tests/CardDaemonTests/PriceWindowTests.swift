import CampusCard
import CardDaemon
import Foundation
import Testing

/// A window's activity is computed from the zone's offset, not a Calendar: Foundation's calendar is the oracle, in a
/// zone east and west of UTC and across daylight-saving changes.
@Suite struct PriceWindowTests {
    @Test(arguments: ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "Pacific/Chatham"])
    func activityMatchesTheCalendarsLocalTime(_ zoneName: String) throws {
        let zone = try #require(TimeZone(identifier: zoneName))
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let breakfast = PriceWindow(name: "breakfast", start: 7 * 60, end: 9 * 60 + 30, price: Fen(350))
        // 2026-03-01 to 2026-11-30, every 7 minutes 13 seconds: both of 2026's DST changes in Berlin and New York.
        var date = Date(timeIntervalSince1970: 1_772_323_200)
        var mismatches: [String] = []
        while date.timeIntervalSince1970 < 1_796_000_000 {
            let parts = calendar.dateComponents([.hour, .minute], from: date)
            let minute = parts.hour! * 60 + parts.minute!
            let expected = breakfast.start <= minute && minute < breakfast.end
            if breakfast.isActive(at: date, in: zone) != expected { mismatches.append("\(date) \(minute)") }
            date += 433
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }
}
