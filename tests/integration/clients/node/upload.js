// Uploads with Node's ssh2-sftp-client, as Node applications do: connect
// with a password, put a local file under a relative name (the session's
// start folder), list it.
//
//   node upload.js HOST PORT USER PASSWORD LOCAL_FILE NAME
//
// Prints the working folder and "ok"; exits non-zero with the reason.
'use strict';

const Client = require('ssh2-sftp-client');

async function main([host, port, username, password, local, name]) {
  const sftp = new Client();
  // A loopback test server with a fresh host key: ssh2 checks no host key
  // unless asked to.
  await sftp.connect({ host, port: Number(port), username, password, readyTimeout: 20000 });
  try {
    console.log(`cwd: ${await sftp.cwd()}`);
    await sftp.put(local, name);
    const listed = await sftp.exists(name);
    if (listed !== '-') {
      throw new Error(`${name} is not a file after the upload: ${listed}`);
    }
  } finally {
    await sftp.end();
  }
  console.log('ok');
}

if (process.argv.length !== 8) {
  console.error('usage: node upload.js HOST PORT USER PASSWORD LOCAL_FILE NAME');
  process.exit(2);
}
main(process.argv.slice(2)).catch((e) => {
  console.error(`ssh2-sftp-client: ${e.message}`);
  process.exit(1);
});
