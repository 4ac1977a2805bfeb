import GRDB
import GRDBSQLite

/// Runs a multi-row statement with its values bound straight through the SQLite C API. GRDB's `StatementArguments`
/// copy and convert every value (about a third of an ingest's CPU at 500 rows × 19 columns); the store's bulk writes
/// and settlebench's plain INSERT both bind through here, so the comparison stays fair.
public enum BulkStatement {
    /// `SQLITE_TRANSIENT`: SQLite copies the text or blob before the call returns (the macro is not imported).
    static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    /// Binds `values` to the statement's parameters in order and steps it to completion. Throws `DatabaseError`
    /// (a wrong value count is `SQLITE_RANGE`).
    public static func execute(_ statement: Statement, _ values: [DatabaseValue]) throws {
        try execute(statement, values[...])
    }

    /// `execute` with the values of a part of an array.
    public static func execute(_ statement: Statement, _ values: ArraySlice<DatabaseValue>) throws {
        let handle = statement.sqliteStatement
        let connection = sqlite3_db_handle(handle)
        func check(_ code: Int32) throws {
            guard code == SQLITE_OK else {
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(connection)), sql: statement.sql)
            }
        }
        try check(sqlite3_reset(handle))
        guard values.count == Int(sqlite3_bind_parameter_count(handle)) else {
            throw DatabaseError(resultCode: .SQLITE_RANGE, message: "\(values.count) values for \(sqlite3_bind_parameter_count(handle)) parameters", sql: statement.sql)
        }
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            switch value.storage {
            case .null: try check(sqlite3_bind_null(handle, index))
            case let .int64(number): try check(sqlite3_bind_int64(handle, index, number))
            case let .double(number): try check(sqlite3_bind_double(handle, index, number))
            case let .string(text): try check(sqlite3_bind_text(handle, index, text, -1, transient))
            case let .blob(data):
                try check(data.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), transient) })
            }
        }
        var code = sqlite3_step(handle)
        while code == SQLITE_ROW { code = sqlite3_step(handle) }
        let reset = sqlite3_reset(handle)
        guard code == SQLITE_DONE else {
            throw DatabaseError(resultCode: ResultCode(rawValue: reset == SQLITE_OK ? code : reset), message: String(cString: sqlite3_errmsg(connection)), sql: statement.sql)
        }
        sqlite3_clear_bindings(handle)
    }

    /// The row counts a multi-row statement is compiled for. A batch is written with the largest that fit, so each
    /// table has at most five statements, each compiled once per connection (cached) whatever the batch sizes.
    static let rowCounts = [500, 128, 32, 8, 1]

    /// Writes `values` (`columns` per row, in row order) with `head` + "(?,…),(?,…)…" + `tail`, in statements of
    /// `rowCounts` rows, compiled once each and then cached.
    public static func insert(_ db: Database, _ head: String, columns: Int, tail: String = "", values: [DatabaseValue]) throws {
        precondition(columns > 0 && values.count % columns == 0, "the values fill whole rows")
        let row = "(" + repeatElement("?", count: columns).joined(separator: ",") + ")"
        var start = 0
        for count in rowCounts {
            let width = count * columns
            guard values.count - start >= width else { continue }
            let statement = try db.cachedStatement(sql: head + repeatElement(row, count: count).joined(separator: ",") + tail)
            while values.count - start >= width {
                try execute(statement, values[start..<start + width])
                start += width
            }
        }
    }
}
