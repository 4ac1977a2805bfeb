import Foundation
import PackagePlugin

/// Generates `BuildInfo+Commit.swift` with the git commit the package is built from (`<sha>`, `<sha>-dirty` when
/// tracked files differ from HEAD, `unknown` outside git), by running scripts/build-info-commit with the system's
/// `/bin/sh` and `git` (building a tool from source would cost more than the command itself).
///
/// A build command, rerun when its inputs change: git's HEAD, its reflog (appended at every commit, checkout, reset),
/// the index, the branch's ref and packed-refs (so a moved HEAD is noticed), and every source file of the package and
/// Package.swift (so an edit that makes the tree dirty is). Not a prebuild command: SwiftPM runs those only when it
/// reloads the package, not on every incremental build (swift-package-manager issue 5476; seen with 6.3).
/// An edit to a tracked file that is not a source file (README, scripts) shows as `-dirty` only at the next build
/// that reruns the command.
@main
struct BuildInfoPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let package = context.package.directoryURL
        let output = context.pluginWorkDirectoryURL.appending(path: "BuildInfo+Commit.swift")
        let script = package.appending(path: "scripts/build-info-commit")
        var inputs = [script, package.appending(path: "Package.swift")] + Self.gitFiles(package: package)
        for case let module as SourceModuleTarget in context.package.targets {
            inputs += module.sourceFiles.map(\.url)
        }
        return [
            .buildCommand(
                displayName: "BuildInfo: git commit of \(context.package.displayName)",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: [script.path, package.path, output.path],
                inputFiles: inputs,
                outputFiles: [output]
            ),
        ]
    }

    /// The files that change when HEAD moves or the index changes; only those that exist (a missing input would
    /// rerun the command at every build). `.git` may be a directory or, in a worktree, a file naming the git dir.
    static func gitFiles(package: URL) -> [URL] {
        let manager = FileManager.default
        let dotGit = package.appending(path: ".git")
        var gitDirectory = dotGit
        if let text = try? String(contentsOf: dotGit, encoding: .utf8), text.hasPrefix("gitdir: ") {
            let path = text.dropFirst("gitdir: ".count).trimmingCharacters(in: .whitespacesAndNewlines)
            gitDirectory = path.hasPrefix("/") ? URL(fileURLWithPath: path) : package.appending(path: path)
        }
        guard manager.fileExists(atPath: gitDirectory.appending(path: "HEAD").path) else { return [] }
        // A worktree's refs live in the common directory.
        var common = gitDirectory
        if let text = try? String(contentsOf: gitDirectory.appending(path: "commondir"), encoding: .utf8) {
            let path = text.trimmingCharacters(in: .whitespacesAndNewlines)
            common = path.hasPrefix("/") ? URL(fileURLWithPath: path) : gitDirectory.appending(path: path)
        }
        var files = [gitDirectory.appending(path: "HEAD"), gitDirectory.appending(path: "logs/HEAD"),
                     gitDirectory.appending(path: "index"), common.appending(path: "packed-refs")]
        if let head = try? String(contentsOf: gitDirectory.appending(path: "HEAD"), encoding: .utf8), head.hasPrefix("ref: ") {
            files.append(common.appending(path: head.dropFirst("ref: ".count).trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        return files.filter { manager.fileExists(atPath: $0.path) }
    }
}
