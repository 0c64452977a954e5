//! The web view's map places the labels of nearby members so that they do
//! not overlap: `placeLabels` of `node/src/api/web/app.js` (a pure
//! function, between its two markers) run in `node` on crowded and lone
//! points. The page itself is tested in a browser by `webview.rs`.

use baton_tests::{repo_root, require_tool, run_with_input};

const BEGIN: &str = "// ---- label placement";
const END: &str = "// ---- end of label placement ----";

/// The checks, in JavaScript: each throws what went wrong.
const CHECKS: &str = r#"
const box = [460, 360], r = 8;
const rectOf = (l, [w, h]) => {
  const left = l.anchor === "start" ? l.x : l.anchor === "end" ? l.x - w : l.x - w / 2;
  return [left, l.y - h * 0.8, left + w, l.y + h * 0.2];
};
const overlaps = (a, b) => Math.min(a[2], b[2]) > Math.max(a[0], b[0]) && Math.min(a[3], b[3]) > Math.max(a[1], b[1]);
function check(name, points, sizes) {
  const labels = placeLabels(points, sizes, box, r);
  if (labels.length !== points.length) throw new Error(name + ": " + labels.length + " labels");
  const rects = labels.map((l, i) => rectOf(l, sizes[i]));
  rects.forEach((a, i) => {
    if (a[0] < 0 || a[1] < 0 || a[2] > box[0] || a[3] > box[1])
      throw new Error(name + ": label " + i + " leaves the map: " + JSON.stringify(a));
    rects.forEach((b, j) => {
      if (j > i && overlaps(a, b))
        throw new Error(name + ": labels " + i + " and " + j + " overlap: " + JSON.stringify(labels));
    });
    points.forEach(([x, y], j) => {
      if (overlaps(a, [x - r, y - r, x + r, y + r]))
        throw new Error(name + ": label " + i + " covers point " + j + ": " + JSON.stringify(labels));
    });
  });
  return labels;
}
// A lone point: its label to the right, as before.
const [lone] = check("lone", [[100, 100]], [[40, 12]]);
if (lone.x !== 113 || lone.y !== 104 || lone.anchor !== "start")
  throw new Error("lone: " + JSON.stringify(lone));
// At the right edge: to the left.
const [edge] = check("edge", [[450, 100]], [[60, 12]]);
if (edge.anchor !== "end") throw new Error("edge: " + JSON.stringify(edge));
// Two members a few pixels apart (same region), three, five, six.
check("pair", [[200, 180], [203, 184]], [[60, 12], [60, 12]]);
check("three", [[200, 180], [204, 178], [198, 186]], [[60, 12], [70, 12], [50, 12]]);
check("five", [[200, 180], [205, 181], [200, 186], [195, 178], [202, 175]],
      [[60, 12], [45, 12], [80, 12], [50, 12], [66, 12]]);
check("row", [[100, 100], [100, 112], [100, 124], [100, 136], [100, 148], [100, 160]],
      Array(6).fill([70, 12]));
// Crowded beyond what the spots can hold: still one label each, inside.
const many = Array.from({ length: 12 }, (_, i) => [230 + (i % 3), 180 + (i % 4)]);
const placed = placeLabels(many, many.map(() => [60, 12]), box, r);
if (placed.length !== 12 || placed.some((l) => !Number.isFinite(l.x) || !Number.isFinite(l.y)))
  throw new Error("many: " + JSON.stringify(placed));
console.log("labels ok");
"#;

#[test]
fn map_labels_of_nearby_members_do_not_overlap() {
    if !require_tool(
        "map_labels_of_nearby_members_do_not_overlap",
        "node",
        "nodejs",
    ) {
        return;
    }
    let app = std::fs::read_to_string(repo_root().join("node/src/api/web/app.js")).unwrap();
    let start = app.find(BEGIN).expect("the label placement's first marker");
    let end = app.find(END).expect("the label placement's last marker");
    let script = format!("{}\n{CHECKS}", &app[start..end]);
    let (ok, printed) = run_with_input("node", &[], &script);
    assert!(ok && printed.contains("labels ok"), "{printed}");
}
