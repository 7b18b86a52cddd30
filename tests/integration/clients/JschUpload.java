// Uploads one file with JSch (Debian's libjsch-java, 0.1.55), as old Java
// systems do: by password, or with a private key (PEM) when one is given.
// Usage: java JschUpload HOST PORT USER PASSWORD LOCAL REMOTE [KEY]
// (an empty PASSWORD logs in by key). Prints "uploaded" and exits 0, or
// prints JSch's error on stderr and exits 1.

import com.jcraft.jsch.ChannelSftp;
import com.jcraft.jsch.JSch;
import com.jcraft.jsch.JSchException;
import com.jcraft.jsch.Session;
import com.jcraft.jsch.SftpException;

public class JschUpload {
    public static void main(String[] args) {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        String user = args[2];
        String password = args[3];
        String local = args[4];
        String remote = args[5];
        try {
            JSch jsch = new JSch();
            if (args.length > 6) {
                jsch.addIdentity(args[6]);
            }
            Session session = jsch.getSession(user, host, port);
            session.setConfig("StrictHostKeyChecking", "no");
            if (password.isEmpty()) {
                session.setConfig("PreferredAuthentications", "publickey");
            } else {
                session.setPassword(password);
                session.setConfig("PreferredAuthentications", "password");
            }
            session.connect(20000);
            ChannelSftp sftp = (ChannelSftp) session.openChannel("sftp");
            sftp.connect(20000);
            sftp.put(local, remote);
            sftp.disconnect();
            session.disconnect();
            System.out.println("uploaded");
        } catch (JSchException | SftpException e) {
            System.err.println("jsch: " + e);
            System.exit(1);
        }
    }
}
