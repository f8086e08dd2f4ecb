//
// Samplesheet groups: the steps that handle a group's slides together (FIND_DOMAINS, SCORE_MARKERS) take one
// task per group and write one file per slide, named <sample>.<suffix> from the slide's meta
//
class SpatialmapGroups {

    /**
     * One group's task input from its slides' rows [ meta, x, y, ... ] (a groupTuple's list):
     * [ [id: group], [ slide metas ], [ x of each ], [ y of each ], ... ], the slides in sample order.
     */
    static List ofGroup(Object group, List rows) {
        def sorted = rows.toSorted { a, b -> a[0].id <=> b[0].id }
        def columns = (1..<sorted[0].size()).collect { i -> sorted.collect { row -> row[i] } }
        return [[id: group], sorted.collect { row -> row[0] }] + columns
    }

    /**
     * A group task's files for each of its slides: [ [ slide meta, <sample>.<suffix> ], ... ], found by the
     * name made from the slide's meta (a file name is never parsed for a sample)
     */
    static List perSlide(List metas, Object files, String suffix) {
        def named = [files].flatten().collectEntries { f -> [f.name, f] }
        return metas.collect { m -> [m, named["${m.id}.${suffix}".toString()]] }
    }
}
