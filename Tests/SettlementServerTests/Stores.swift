import SettlementCore

/// The store the HTTP tests run on.
func makeTestStore() async throws -> any SettlementStore {
    MemoryStore()
}
