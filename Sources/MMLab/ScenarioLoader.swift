// SPDX-License-Identifier: Apache-2.0
import MM
import Yams

/// Why a scenario file was refused: one error, with the line and column of
/// the offending value and the field's path (`workers[0].threads`).
public struct ScenarioError: Error, Sendable, CustomStringConvertible {
    /// The file (or built-in scenario) name.
    public var source: String
    /// Line of the offending value, from 1.
    public var line: Int
    /// Column of the offending value, from 1.
    public var column: Int
    /// The field's path, e.g. `workers[1].operations[0].size`; empty for a YAML syntax error.
    public var field: String
    /// What is wrong, and what would be right.
    public var message: String

    /// A one-line description, as events and reports print it.
    public var description: String {
        "\(source):\(line):\(column): error: \(field.isEmpty ? "" : "\(field): ")\(message)"
    }
}

/// The allowed keys of every mapping in a scenario file, so that a
/// misspelled field is an error instead of silently ignored.
indirect enum ScenarioShape: Sendable {
    case scalar
    case list(ScenarioShape)
    case record([String: ScenarioShape])

    static let scenario = ScenarioShape.record([
        "name": .scalar, "description": .scalar, "seed": .scalar, "duration": .scalar, "watchdog": .scalar,
        "progress": .scalar,
        "semantics": .list(.scalar),
        "arena": .record(["capacity": .scalar, "stallReportInterval": .scalar, "limit": .scalar,
                          "watermarks": .record(["min": .scalar, "low": .scalar, "high": .scalar]),
                          "pressureMonitor": .record(["floor": .scalar, "step": .scalar, "relaxAfter": .scalar])]),
        "groups": .list(.record(["name": .scalar, "oomScoreAdjust": .scalar, "parent": .scalar,
                                 "min": .scalar, "low": .scalar, "high": .scalar, "max": .scalar,
                                 "exitAllocation": .scalar])),
        "locks": .list(.record(["name": .scalar])),
        "caches": .list(.record(["name": .scalar, "objectSize": .scalar, "count": .scalar, "seeks": .scalar,
                                 "domain": .scalar, "lock": .scalar, "group": .scalar, "reclaimable": .scalar])),
        "workers": .list(.record(["name": .scalar, "threads": .scalar, "operations": .list(.record([
            "size": .scalar, "count": .scalar, "placement": .scalar, "policy": .scalar, "guarantee": .scalar,
            "scopes": .list(.scalar), "locks": .list(.scalar), "hold": .scalar, "rate": .scalar, "grow": .scalar,
            "transaction": .scalar, "group": .scalar,
        ]))])),
        "events": .list(.record(["at": .scalar, "action": .scalar, "bytes": .scalar, "duration": .scalar,
                                 "cache": .scalar, "group": .scalar])),
    ])
}

/// Reads scenarios: YAML syntax (Yams), the allowed fields, types (Codable),
/// then the values (`validate`) — the first problem is one `ScenarioError`.
public enum ScenarioLoader {
    /// Parses and checks `yaml`; `source` names it in errors.
    public static func load(yaml: String, source: String) throws(ScenarioError) -> Scenario {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: yaml) else {
                throw ScenarioError(source: source, line: 1, column: 1, field: "", message: "the file is empty")
            }
            root = node
        } catch let error as ScenarioError {
            throw error
        } catch let error as YamlError {
            throw syntaxError(error, source: source)
        } catch {
            throw ScenarioError(source: source, line: 1, column: 1, field: "", message: "\(error)")
        }
        try checkShape(root, ScenarioShape.scenario, path: [], source: source)
        let scenario: Scenario
        do {
            scenario = try YAMLDecoder().decode(Scenario.self, from: root)
        } catch let error as DecodingError {
            throw decodingError(error, root: root, source: source)
        } catch {
            throw ScenarioError(source: source, line: 1, column: 1, field: "", message: "\(error)")
        }
        do {
            try validate(scenario)
        } catch let problem {
            let mark = node(at: problem.path, in: root)?.mark
            throw ScenarioError(source: source, line: mark?.line ?? 1, column: mark?.column ?? 1,
                                field: render(problem.path), message: problem.message)
        }
        return scenario
    }

    // MARK: Syntax and shape

    private static func syntaxError(_ error: YamlError, source: String) -> ScenarioError {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
            return ScenarioError(source: source, line: mark.line, column: mark.column, field: "",
                                 message: "malformed YAML: \(problem)")
        default:
            return ScenarioError(source: source, line: 1, column: 1, field: "", message: "malformed YAML: \(error)")
        }
    }

    private static func checkShape(_ node: Node, _ shape: ScenarioShape, path: [PathElement], source: String) throws(ScenarioError) {
        func fail(_ message: String, at n: Node, _ p: [PathElement]) -> ScenarioError {
            ScenarioError(source: source, line: n.mark?.line ?? 1, column: n.mark?.column ?? 1, field: render(p), message: message)
        }
        switch shape {
        case .scalar:
            guard node.scalar != nil else { throw fail("expected a single value, found \(kind(node))", at: node, path) }
        case .list(let element):
            guard let sequence = node.sequence else { throw fail("expected a list, found \(kind(node))", at: node, path) }
            for (i, item) in sequence.enumerated() { try checkShape(item, element, path: path + [.index(i)], source: source) }
        case .record(let fields):
            guard let mapping = node.mapping else { throw fail("expected a mapping of fields, found \(kind(node))", at: node, path) }
            for (key, value) in mapping {
                guard let name = key.string else { throw fail("a field name must be text", at: key, path) }
                guard let inner = fields[name] else {
                    let known = fields.keys.sorted().joined(separator: ", ")
                    throw fail("unknown field \"\(name)\" (known: \(known))", at: key, path + [.key(name)])
                }
                try checkShape(value, inner, path: path + [.key(name)], source: source)
            }
        }
    }

    private static func kind(_ node: Node) -> String {
        switch node {
        case .scalar(let s): return "\"\(s.string)\""
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    // MARK: Paths

    enum PathElement: Equatable {
        case key(String)
        case index(Int)
    }

    static func render(_ path: [PathElement]) -> String {
        var s = ""
        for e in path {
            switch e {
            case .key(let k): s += s.isEmpty ? k : ".\(k)"
            case .index(let i): s += "[\(i)]"
            }
        }
        return s
    }

    static func node(at path: [PathElement], in root: Node) -> Node? {
        var current = root
        for e in path {
            switch e {
            case .key(let k):
                guard let value = current.mapping?.first(where: { $0.key.string == k })?.value else { return current }
                current = value
            case .index(let i):
                guard let sequence = current.sequence, i < sequence.count else { return current }
                current = sequence[i]
            }
        }
        return current
    }

    private static func decodingError(_ error: DecodingError, root: Node, source: String) -> ScenarioError {
        func path(_ keys: [any CodingKey]) -> [PathElement] {
            keys.map { $0.intValue.map(PathElement.index) ?? .key($0.stringValue) }
        }
        let (p, message): ([PathElement], String)
        switch error {
        case .typeMismatch(let type, let context):
            (p, message) = (path(context.codingPath), "expected \(typeName(type)): \(context.debugDescription)")
        case .valueNotFound(let type, let context):
            (p, message) = (path(context.codingPath), "missing \(typeName(type))")
        case .keyNotFound(let key, let context):
            (p, message) = (path(context.codingPath), "missing required field \"\(key.stringValue)\"")
        case .dataCorrupted(let context):
            (p, message) = (path(context.codingPath), context.debugDescription)
        @unknown default:
            (p, message) = ([], "\(error)")
        }
        let mark = node(at: p, in: root)?.mark
        return ScenarioError(source: source, line: mark?.line ?? 1, column: mark?.column ?? 1, field: render(p), message: message)
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is UInt64.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "text"
        default: return "\(type)"
        }
    }
}
