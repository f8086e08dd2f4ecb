//
// Parameters checked against nextflow_schema.json before any task runs, and --help rendered
// from it. Nextflow runs offline without plugins here, so the schema is read with JsonSlurper.
//
// Keywords honoured: type (string, integer, number, boolean, or a list of them), enum,
// pattern, minimum, maximum, exclusiveMinimum, exclusiveMaximum, required (per group), and
// the custom "x-list-enum": a comma-separated list whose every entry must be one of the given
// values (e.g. --methods); adding a value there is all that is needed to allow it.
//

import groovy.json.JsonSlurper

class SpatialmapSchema {

    // set by config profiles, not by users
    static final List<String> IGNORED = ['config_profile_name', 'config_profile_description']

    final Map schema
    final Map<String, Map> entries = [:]     // parameter -> schema entry
    final Map<String, String> groupOf = [:]  // parameter -> group title
    final Set<String> required = [] as Set

    SpatialmapSchema(File file) {
        schema = (Map) new JsonSlurper().parse(file)
        schema['$defs'].each { String key, Map group ->
            group.properties.each { String name, Map entry ->
                entries[name] = entry
                groupOf[name] = group.title ?: key
            }
            (group.required ?: []).each { required << it }
        }
    }

    // ------------------------------------------------------------------------------------
    // validation
    // ------------------------------------------------------------------------------------

    /** Error messages, one per bad parameter (empty when all are fine). */
    List<String> errors(Map params) {
        def found = []
        entries.each { String name, Map entry ->
            def value = params.containsKey(name) ? params[name] : null
            def types = entry.type instanceof List ? entry.type : [entry.type]
            if (value == false && !('boolean' in types)) value = null  // --reference false: not set
            if (value == null || value == '') {
                if (name in required) {
                    found << "Missing required parameter --${name}: ${entry.description}".toString()
                }
                return
            }
            def problem = check(name, value, entry)
            if (problem) found << problem
        }
        found
    }

    /** Parameters given that the schema does not know, each with a suggestion when close to one. */
    List<String> unknown(Map params) {
        def names = params.keySet().collect { it.toString() }
        def given = names as Set
        names.findAll { name ->
            !(name in entries) && !(name in IGNORED) && !isCamelTwin(name, given)
        }.collect { name ->
            def near = closest(name)
            "Unknown parameter --${name} (not in nextflow_schema.json; it has no effect)" +
                (near ? "; did you mean --${near}?" : '')
        }
    }

    // Nextflow adds fooBar for a --foo-bar given on the command line: report only foo-bar
    private static boolean isCamelTwin(String name, Set<String> given) {
        given.any { it.contains('-') && kebabToCamel(it) == name }
    }

    private static String kebabToCamel(String s) {
        s.replaceAll(/-(\w)/) { all, c -> c.toUpperCase() }
    }

    private String closest(String name) {
        def norm = { String s -> s.toLowerCase().replaceAll(/[-_]/, '') }
        def target = norm(name)
        def best = entries.keySet().min { distance(norm(it), target) }
        best != null && distance(norm(best), target) <= Math.max(2, (int) (target.size() / 4)) ? best : null
    }

    private static int distance(String a, String b) {
        def prev = (0..b.size()).toList()
        for (int i = 1; i <= a.size(); i++) {
            def cur = [i]
            for (int j = 1; j <= b.size(); j++) {
                cur << [prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)].min()
            }
            prev = cur
        }
        prev[b.size()]
    }

    /** null when ``value`` satisfies ``entry``, else one message naming the parameter, the value and what is allowed. */
    static String check(String name, Object value, Map entry) {
        def types = entry.type instanceof List ? entry.type : [entry.type ?: 'string']
        def shown = value instanceof String ? "'${value}'" : value.toString()
        def typed = null
        for (type in types) {
            typed = coerce(value, type)
            if (typed != null) break
        }
        if (typed == null) {
            def what = types.collect { typeWords(it) }.join(' or ')
            if (value instanceof Boolean && !('boolean' in types)) {
                return "Invalid parameter --${name}: given without a value; it needs ${what}${rangeWords(entry)}"
            }
            return "Invalid parameter --${name} ${shown}: must be ${what}${rangeWords(entry)}"
        }
        if (entry.enum != null && !(entry.enum.any { it.toString() == typed.toString() })) {
            return "Invalid parameter --${name} ${shown}: must be one of ${entry.enum.join(', ')}"
        }
        if (entry['x-list-enum'] != null) {
            def allowed = entry['x-list-enum']*.toString()
            def items = typed.toString().split(',', -1)*.trim()
            def bad = items.findAll { !(it in allowed) }
            if (bad) {
                def listed = bad.collect { it ? "'${it}'" : 'an empty entry' }.join(', ')
                return "Invalid parameter --${name} ${shown}: unknown entry ${listed}; give a comma-separated list of ${allowed.join(', ')}"
            }
            def twice = items.findAll { item -> items.count(item) > 1 }.unique()
            if (twice) {
                return "Invalid parameter --${name} ${shown}: ${twice.join(', ')} given more than once"
            }
        }
        if (entry.pattern != null && typed instanceof String && !java.util.regex.Pattern.compile(entry.pattern.toString()).matcher(typed).find()) {
            if (entry.pattern.toString().contains('\\S') && typed =~ /\s/) {
                // a path with a space (the nf-core patterns ^\S+\.csv$ ...): say so, and how to get round it
                return "Invalid parameter --${name} ${shown}: the path contains a space, which the pipeline does not accept " +
                    "in file paths (a task's command line would split it there); rename the folder or file without " +
                    "spaces, or copy the file to a path without any" +
                    (entry.schema ? " (relative paths in a samplesheet are read from its own folder: give absolute ones if you copy only the samplesheet)" : '')
            }
            return "Invalid parameter --${name} ${shown}: must match the pattern ${entry.pattern}" +
                (entry.description ? " (${entry.description})" : '')
        }
        if (typed instanceof Number) {
            def x = typed as BigDecimal
            def low = entry.minimum != null && x < (entry.minimum as BigDecimal)
            def high = entry.maximum != null && x > (entry.maximum as BigDecimal)
            def lowEx = entry.exclusiveMinimum != null && x <= (entry.exclusiveMinimum as BigDecimal)
            def highEx = entry.exclusiveMaximum != null && x >= (entry.exclusiveMaximum as BigDecimal)
            if (low || high || lowEx || highEx) {
                return "Invalid parameter --${name} ${shown}: must be ${typeWords(types[0])}${rangeWords(entry)}"
            }
        }
        null
    }

    // the value as the type, or null when it is not of that type
    private static Object coerce(Object value, String type) {
        switch (type) {
            case 'string':
                return (value instanceof Boolean) ? null : value.toString()
            case 'boolean':
                if (value instanceof Boolean) return value
                def s = value.toString().toLowerCase()
                return s == 'true' ? true : (s == 'false' ? false : null)
            case 'integer':
                if (value instanceof Integer || value instanceof Long || value instanceof BigInteger) return value
                if (value instanceof Number) return null
                return (value instanceof String && value.trim().isBigInteger()) ? value.trim().toBigInteger() : null
            case 'number':
                if (value instanceof Number) return value
                return (value instanceof String && value.trim().isBigDecimal()) ? value.trim().toBigDecimal() : null
            case 'null':
                return null
            default:
                return value
        }
    }

    private static String typeWords(String type) {
        [string: 'a text value', integer: 'a whole number', number: 'a number', boolean: 'true or false'][type] ?: type
    }

    private static String rangeWords(Map entry) {
        def parts = []
        if (entry.minimum != null) parts << ">= ${entry.minimum}"
        if (entry.exclusiveMinimum != null) parts << "> ${entry.exclusiveMinimum}"
        if (entry.maximum != null) parts << "<= ${entry.maximum}"
        if (entry.exclusiveMaximum != null) parts << "< ${entry.exclusiveMaximum}"
        parts ? ' ' + parts.join(' and ') : ''
    }

    // ------------------------------------------------------------------------------------
    // help
    // ------------------------------------------------------------------------------------

    /** Every parameter by group, with its type, description and default. */
    String help(String usage) {
        def width = entries.keySet()*.size().max() + 3
        def out = new StringBuilder()
        out << (schema.title ?: 'Parameters') << '\n' << (schema.description ?: '') << '\n\n' << usage << '\n'
        schema['$defs'].each { String key, Map group ->
            out << '\n' << (group.title ?: key) << (group.description ? ": ${group.description}" : '') << '\n'
            group.properties.each { String name, Map entry ->
                def type = entry.type instanceof List ? entry.type.join('|') : entry.type
                def line = "  --${name}".padRight(width + 2) + " [${type}] ${entry.description ?: ''}"
                if (entry.enum) line += " (one of: ${entry.enum.join(', ')})"
                if (entry['x-list-enum']) line += " (any of: ${entry['x-list-enum'].join(', ')})"
                if (entry.containsKey('default')) line += " (default: ${entry.default})"
                if (name in required) line += ' (required)'
                out << line << '\n'
            }
        }
        out << '\nMore on one parameter: --help <parameter>, e.g. --help methods\n'
        out.toString()
    }

    /** The full schema entry of one parameter, or null when the schema does not know it. */
    String helpFor(String name) {
        name = name.replaceFirst(/^--/, '')
        def entry = entries[name]
        if (entry == null) return null
        def out = new StringBuilder("--${name}\n")
        out << "    group: ${groupOf[name]}\n"
        if (name in required) out << "    required: true\n"
        entry.each { key, value ->
            def shown = value instanceof List ? value.join(', ') : value
            out << "    ${key}: ${shown}\n"
        }
        out.toString()
    }
}
