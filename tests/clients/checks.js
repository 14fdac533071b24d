// What the Node client programs share: named checks that throw on
// failure, and the closing "N passed, 0 failed" line the tests look for.
let passed = 0;

async function check(name, fn) {
  await fn();
  passed += 1;
  console.log(`ok   ${name}`);
}

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

// Runs `main`, then prints the tally; any failure exits with status 1.
function run(main) {
  main()
    .then(() => console.log(`${passed} passed, 0 failed`))
    .catch((e) => {
      console.error(e);
      process.exit(1);
    });
}

module.exports = { check, assert, run };
