<?php
// phpseclib 3 as PHP applications use it: one SSH connection, a command
// first (refused here: the server offers sftp only), then uploads over
// SFTP on the same connection. phpseclib drops the whole connection when
// a server closes the channel of a refused request, so the uploads
// succeed only if the refusal left the connection usable.
//
//   php phpseclib_exec_then_upload.php HOST PORT USER PASSWORD LOCAL_FILE NAME...
//
// Each NAME (relative: the session's start folder) gets LOCAL_FILE's
// content. Prints one line per step; exits non-zero on the first failure.

require_once '/usr/share/php/phpseclib3/autoload.php';

use phpseclib3\Net\SFTP;

function fail(string $why): void
{
    fwrite(STDERR, "phpseclib: $why\n");
    exit(1);
}

if ($argc < 7) {
    fail('usage: HOST PORT USER PASSWORD LOCAL_FILE NAME...');
}
[, $host, $port, $user, $password, $local] = $argv;
$names = array_slice($argv, 6);

$sftp = new SFTP($host, (int) $port, 20);
if (!$sftp->login($user, $password)) {
    fail('login failed');
}
foreach (['md5sum', 'df -k .'] as $command) {
    $result = $sftp->exec($command);
    echo 'exec ' . $command . ': ' . var_export($result, true) . "\n";
    if (!$sftp->isConnected()) {
        fail("the connection was dropped after the refused exec of $command");
    }
}
foreach ($names as $name) {
    if (!$sftp->put($name, $local, SFTP::SOURCE_LOCAL_FILE)) {
        fail("put $name failed: " . implode('; ', $sftp->getSFTPErrors()));
    }
    echo "put $name: ok\n";
}
echo 'pwd: ' . $sftp->pwd() . "\n";
echo "ok\n";
