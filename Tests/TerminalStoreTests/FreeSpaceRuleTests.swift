import CampusCard
import Foundation
import Testing
import TerminalStore

/// The free-space rule without a full file system (the tmpfs tests need a private mount namespace): a store that
/// asks for more free space than any disk has refuses every intent, and keeps nothing of it.
@Suite struct FreeSpaceRuleTests {
    @Test func aStoreShortOfSpaceRefusesTheIntentAndKeepsNothing() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let store = try TerminalStore(path: directory.path + "/store.sqlite", options: .init(minimumFreeBytes: Int64.max))
        let sequence = try store.nextSequence()
        #expect(throwsStoreError(.diskFull) { try store.record(intent(sequence)) })
        #expect(try store.openIntents(cardUID: "01020304").isEmpty)
        #expect(try store.transaction(sequence: sequence) == nil)
    }
}
