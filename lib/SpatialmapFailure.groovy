//
// The one line a failed run ends with: the bin script's own error message
// (`ERROR: ...`, printed last on stderr by spatialmap.cli.run), not a library warning
// that happened to be printed before it.
//

class SpatialmapFailure {

    /** The last `ERROR: ` line of a task's error text, else its last non-empty line. */
    static String summary(String errorMessage, String errorReport = null) {
        for (text in [errorMessage, errorReport]) {
            def lines = (text ?: '').readLines()*.trim().findAll { it }
            def script = lines.findAll { it.startsWith('ERROR: ') }
            if (script) return script[-1]
        }
        def lines = (errorMessage ?: '').readLines()*.trim().findAll { it }
        lines ? lines[-1] : 'see the error above'
    }
}
